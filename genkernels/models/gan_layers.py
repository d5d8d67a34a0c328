"""Layers, losses and penalties shared by the GAN models (dcgan, cgan, progan, stylegan, pix2pix, ...).

- ``GANConfig`` / ``GANModel``: the two-phase ("d" then "g") training protocol with Adam per network and
  the generator as the EMA module.
- Equalised learning rate (ProGAN, StyleGAN): weights drawn N(0, 1) / lr_mul and scaled at run time by
  gain * lr_mul / sqrt(fan_in), so Adam's per-parameter step sizes are the same for every layer.
- ``pixel_norm``, ``MinibatchStd``, ``NoiseInjection``, ``StyleAdaIN`` (modulation through the fused
  ``genkernels.adain`` op), ``DBlock`` / ``DEpilogue`` (the ProGAN / StyleGAN discriminator).
- Losses: ``d_loss`` / ``g_loss`` for "nonsaturating", "wgan", "lsgan", "hinge";
  ``gradient_penalty`` (WGAN-GP), ``r1_penalty``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import adain
from .base import Config, Model

Tensor = torch.Tensor
LOSSES = ("nonsaturating", "wgan", "lsgan", "hinge")


# ---------------------------------------------------------------------------------------- protocol
@dataclass
class GANConfig(Config):
    beta1: float = 0.5              # Adam betas of both networks (DCGAN: 0.5, 0.999)
    beta2: float = 0.999
    lr_d: Optional[float] = None    # discriminator learning rate; None: lr


class GANModel(Model):
    """A generator and a discriminator trained alternately: phase "d" then "g" each step.

    Subclasses set ``self.generator`` and ``self.discriminator``."""

    generator: nn.Module
    discriminator: nn.Module

    def phases(self, step: int):
        return ("d", "g")

    def optimizers(self) -> Dict[str, torch.optim.Optimizer]:
        c = self.config
        betas = (c.beta1, c.beta2)
        return {"d": torch.optim.Adam(self.discriminator.parameters(), lr=c.lr_d or c.lr, betas=betas),
                "g": torch.optim.Adam(self.generator.parameters(), lr=c.lr, betas=betas)}

    def ema_modules(self) -> List[str]:
        return ["generator"] if self.config.ema_decay else []


def init_normal_(module: nn.Module, std: float = 0.02) -> nn.Module:
    """DCGAN / pix2pix initialisation: conv and linear weights N(0, std), norm scales N(1, std), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)
    return module


def check_loss_kind(kind: str) -> str:
    if kind not in LOSSES:
        raise ValueError(f"`loss` must be one of {', '.join(LOSSES)}, got {kind!r}")
    return kind


# ---------------------------------------------------------------------------------------- layers
class EqualLinear(nn.Module):
    """Linear layer with an equalised learning rate: y = x (W * gain * lr_mul / sqrt(in))^T + b * lr_mul."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, bias_init: float = 0.0,
                 lr_mul: float = 1.0, gain: float = math.sqrt(2)):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), bias_init / lr_mul)) if bias else None
        self.scale = gain * lr_mul / math.sqrt(in_features)
        self.lr_mul = lr_mul

    def forward(self, x: Tensor) -> Tensor:
        bias = self.bias * self.lr_mul if self.bias is not None else None
        return F.linear(x, self.weight * self.scale, bias)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, lr_mul={self.lr_mul}"


class EqualConv2d(nn.Module):
    """Conv2d with an equalised learning rate (weights scaled by gain / sqrt(in * k * k) at run time)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0,
                 bias: bool = True, gain: float = math.sqrt(2)):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale = gain / math.sqrt(in_channels * kernel_size * kernel_size)
        self.padding = padding

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)

    def extra_repr(self) -> str:
        o, i, k, _ = self.weight.shape
        return f"{i}, {o}, kernel_size={k}, padding={self.padding}"


def pixel_norm(x: Tensor, eps: float = 1e-8) -> Tensor:
    """ProGAN's pixel-wise feature normalisation: each feature vector (dim 1) to unit RMS."""
    return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + eps)


def lrelu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.2)


class MinibatchStd(nn.Module):
    """Appends one channel: the standard deviation of each feature over a group of samples, averaged
    over features and positions (ProGAN), so the critic can see a lack of variety."""

    def __init__(self, group_size: int = 4, eps: float = 1e-8):
        super().__init__()
        self.group_size, self.eps = group_size, eps

    def forward(self, x: Tensor) -> Tensor:
        N, C, H, W = x.shape
        G = max(g for g in range(1, min(self.group_size, N) + 1) if N % g == 0)   # groups that tile N
        y = x.reshape(G, N // G, C, H, W)
        std = (y.var(dim=0, unbiased=False) + self.eps).sqrt()          # [N/G, C, H, W]
        std = std.mean(dim=(1, 2, 3)).reshape(1, N // G, 1, 1, 1).expand(G, N // G, 1, H, W)
        return torch.cat([x, std.reshape(N, 1, H, W)], dim=1)


class NoiseInjection(nn.Module):
    """x + scale[c] * noise[n, 1, h, w] with a learned per-channel scale starting at zero (StyleGAN)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: Tensor, noise: Optional[Tensor] = None,
                generator: Optional[torch.Generator] = None) -> Tensor:
        if noise is None:
            N, _, H, W = x.shape
            noise = torch.randn(N, 1, H, W, device=x.device, dtype=x.dtype, generator=generator)
        return x + self.weight * noise


class StyleAdaIN(nn.Module):
    """StyleGAN's AdaIN: an equalised-lr affine map of w to a per-channel (scale, bias), applied to the
    instance-normalised x by the fused adain op. The affine's bias starts at scale 1, bias 0."""

    def __init__(self, channels: int, w_dim: int):
        super().__init__()
        self.channels = channels
        self.affine = EqualLinear(w_dim, 2 * channels, gain=1.0)
        with torch.no_grad():
            self.affine.bias[:channels].fill_(1.0)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        scale, bias = self.affine(w).chunk(2, dim=1)
        return adain(x, scale.contiguous(), bias.contiguous())


class DBlock(nn.Module):
    """ProGAN / StyleGAN discriminator block: two 3x3 equalised convs with LeakyReLU, then 2x average pool."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = EqualConv2d(in_channels, in_channels, 3, padding=1)
        self.conv2 = EqualConv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(lrelu(self.conv2(lrelu(self.conv1(x)))), 2)


class DEpilogue(nn.Module):
    """The 4x4 end of the ProGAN / StyleGAN critic: minibatch std, conv, dense, one output per sample."""

    def __init__(self, channels: int, mbstd_group: int = 4):
        super().__init__()
        self.mbstd = MinibatchStd(mbstd_group)
        self.conv = EqualConv2d(channels + 1, channels, 3, padding=1)
        self.fc = EqualLinear(channels * 16, channels)
        self.out = EqualLinear(channels, 1, gain=1.0)

    def forward(self, x: Tensor) -> Tensor:
        x = lrelu(self.conv(self.mbstd(x)))
        return self.out(lrelu(self.fc(x.flatten(1)))).squeeze(1)


# ---------------------------------------------------------------------------------------- losses
def d_loss(kind: str, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """The discriminator's loss on critic outputs for real and generated samples."""
    if kind == "nonsaturating":
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    if kind == "wgan":
        return fake_logits.mean() - real_logits.mean()
    if kind == "lsgan":     # halved, as CycleGAN's D loss
        return 0.5 * ((real_logits - 1).pow(2).mean() + fake_logits.pow(2).mean())
    if kind == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    return d_loss(check_loss_kind(kind), real_logits, fake_logits)


def g_loss(kind: str, fake_logits: Tensor) -> Tensor:
    """The generator's loss on the critic's outputs for its samples (non-saturating: -log D(G(z)))."""
    if kind == "nonsaturating":
        return F.softplus(-fake_logits).mean()
    if kind in ("wgan", "hinge"):
        return -fake_logits.mean()
    if kind == "lsgan":
        return (fake_logits - 1).pow(2).mean()
    return g_loss(check_loss_kind(kind), fake_logits)


def gradient_penalty(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor,
                     target: float = 1.0) -> Tensor:
    """WGAN-GP: E[(||grad_x critic(x)|| - target)^2] at random points x between real and fake samples
    (one mixing weight per sample, from the global RNG)."""
    alpha = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    x = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - target).pow(2).mean()


def r1_penalty(critic: Callable[[Tensor], Tensor], real: Tensor) -> Tensor:
    """R1: E[||grad_x critic(x)||^2] on real samples (multiply by gamma / 2 in the loss)."""
    x = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    return grad.flatten(1).pow(2).sum(dim=1).mean()
