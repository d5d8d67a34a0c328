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

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import InstanceNorm2d
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

    def randn(self, *shape: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """Standard normal noise on the model's device and in its dtype: from `generator` (sampling;
        drawn on the generator's device) or from the global RNG (training)."""
        p = next(self.parameters())
        if generator is None:
            return torch.randn(*shape, device=p.device, dtype=p.dtype)
        return torch.randn(*shape, generator=generator, device=generator.device, dtype=p.dtype).to(p.device)

    @torch.no_grad()
    def preview(self, batch: Dict[str, Tensor], generator: torch.Generator) -> Tensor:
        return self.generate(min(len(batch["image"]), 64), generator)

    @torch.no_grad()
    def evaluate(self, split: str = "test", num: int = 500, generator: Optional[torch.Generator] = None
                 ) -> Dict[str, Any]:
        """FD-digits and KID of `num` samples against as many held-out images (with the metrics'
        floor and ceiling at the same size when the data is digits)."""
        return sample_metrics(self, self.generate, split, num, generator)


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """The generator's phase: the critic's parameters take no gradient (none computed, none left for
    the critic's next step, whatever the loop does with gradients between phases)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def sample_metrics(model: Model, sample: Callable[..., Tensor], split: str, num: int,
                   generator: Optional[torch.Generator], **options: Any) -> Dict[str, Any]:
    """FD-digits and KID of ``sample(n, generator, **options)`` against n held-out images of the model's
    data (n = min(num, size of the split)), generated in chunks; bounds from genkernels.metrics."""
    from .. import data, metrics
    c = model.config
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    real = data.load(c.data, split, c.image_size)["image"][:num]
    n = len(real)
    fake = torch.cat([sample(min(256, n - i), generator, **options).float().cpu() for i in range(0, n, 256)])
    out: Dict[str, Any] = {"num": n}
    for name, fn in (("fd_digits", metrics.fd_digits), ("kid", metrics.kid)):
        value = fn(fake, real)
        out[name] = metrics.bounds(name, value, n, c.image_size) if c.data == "digits" else {"value": value}
    return out


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
            device = x.device if generator is None else generator.device
            noise = torch.randn(N, 1, H, W, device=device, dtype=x.dtype, generator=generator).to(x.device)
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


class GrowingDiscriminator(nn.Module):
    """The ProGAN critic (also StyleGAN's): from-RGB 1x1 conv at each resolution 4 * 2^level, a DBlock per
    doubling, the 4x4 epilogue. ``forward(img, level, alpha)`` runs the networks of resolution
    4 * 2^level; with alpha < 1 the new top block is faded in over the half-resolution path."""

    def __init__(self, channels: Sequence[int], in_channels: int, mbstd_group: int = 4):
        super().__init__()
        self.from_rgb = nn.ModuleList(EqualConv2d(in_channels, ch, 1) for ch in channels)
        self.blocks = nn.ModuleList(DBlock(a, b) for a, b in zip(channels[1:], channels))   # level i -> i - 1
        self.epilogue = DEpilogue(channels[0], mbstd_group)

    def forward(self, img: Tensor, level: Optional[int] = None, alpha: float = 1.0) -> Tensor:
        level = len(self.blocks) if level is None else level
        x = lrelu(self.from_rgb[level](img))
        if level > 0:
            x = self.blocks[level - 1](x)
            if alpha < 1:
                x = torch.lerp(lrelu(self.from_rgb[level - 1](F.avg_pool2d(img, 2))), x, alpha)
        for block in reversed(self.blocks[:level - 1] if level > 1 else []):
            x = block(x)
        return self.epilogue(x)


class StyleLayer(nn.Module):
    """One StyleGAN synthesis layer: [2x nearest upsample] [3x3 conv], per-pixel noise with a learned
    per-channel scale, bias, LeakyReLU, then AdaIN of the style w through the fused adain op.
    noise: "random" (fresh noise), "const" (a fixed map drawn at construction) or "none"."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int,
                 upsample: bool = False, conv: bool = True):
        super().__init__()
        self.upsample = upsample
        self.conv = EqualConv2d(in_channels, out_channels, 3, padding=1, bias=False) if conv else None
        self.noise = NoiseInjection(out_channels)
        self.bias = nn.Parameter(torch.zeros(1, out_channels, 1, 1))
        self.style = StyleAdaIN(out_channels, w_dim)
        self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution))

    def forward(self, x: Tensor, w: Tensor, noise: str = "random",
                generator: Optional[torch.Generator] = None) -> Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        if self.conv is not None:
            x = self.conv(x)
        if noise == "random":
            x = self.noise(x, generator=generator)
        elif noise == "const":
            x = self.noise(x, self.noise_const)
        elif noise != "none":
            raise ValueError(f"`noise` must be 'random', 'const' or 'none', got {noise!r}")
        return self.style(lrelu(x + self.bias), w)


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


# ------------------------------------------------------------------- image-to-image (pix2pix, cyclegan, stargan)
NORMS = ("batch", "instance", "none")


def norm_layer(kind: str, channels: int, affine: bool = False) -> nn.Module:
    """The authors' norm choice of pix2pix / CycleGAN: BatchNorm2d (affine), or instance norm (no
    affine by default, as their code) on the fused kernels (``genkernels.nn.InstanceNorm2d``)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return InstanceNorm2d(channels, affine=affine)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"`norm` must be one of {', '.join(NORMS)}, got {kind!r}")


class PatchDiscriminator(nn.Module):
    """pix2pix / CycleGAN's PatchGAN: 4x4 convs, stride 2 then two of stride 1, LeakyReLU(0.2), one
    logit per overlapping patch. n_layers = 3 (the authors' default) sees 70x70-pixel patches.
    Convs followed by a norm have no bias: the norm subtracts each channel's mean, so a bias there
    changes nothing (the authors' code keeps it with instance norm: 896 dead weights at ndf = 64)."""

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 3, norm: str = "batch"):
        super().__init__()
        bias = norm == "none"
        layers = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=bias),
                       norm_layer(norm, ndf * mult), nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, 1, 1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


def patch_receptive_field(n_layers: int) -> int:
    """Side in pixels of the input patch one PatchDiscriminator output sees (70 for n_layers = 3)."""
    field = 4                                        # the output conv (4x4, stride 1)
    for stride in [1] + [2] * n_layers:              # back through the hidden convs, last to first
        field = (field - 1) * stride + 4
    return field


class ResnetBlock(nn.Module):
    """x + norm(conv3(relu(norm(conv3(x))))): the residual block of CycleGAN's generator (reflection
    padding, instance norm without affine) and StarGAN's (zero padding, affine instance norm). The convs
    have no bias, which the norm after each would cancel."""

    def __init__(self, channels: int, norm: str = "instance", padding_mode: str = "reflect",
                 affine: bool = False, bias: bool = False):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, padding_mode=padding_mode, bias=bias),
            norm_layer(norm, channels, affine), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, padding_mode=padding_mode, bias=bias),
            norm_layer(norm, channels, affine))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class ImagePool(nn.Module):
    """CycleGAN's history of generated images (Shrivastava et al. 2017): the discriminator sees a
    fake from the current batch, or, with probability 1/2 once the pool is full, one stored earlier
    (which the current image then replaces). The pool is a buffer, so checkpoints carry it and a
    resumed run continues with the same history; randomness from torch's global RNG."""

    def __init__(self, size: int, image_shape: tuple):
        super().__init__()
        if size < 0:
            raise ValueError(f"ImagePool: `size` must be >= 0, got {size}")
        self.size = size
        self.register_buffer("images", torch.zeros(size, *image_shape))
        self.register_buffer("count", torch.zeros(1, dtype=torch.int64))

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        if self.size == 0:
            return images
        images = images.detach()
        out = images.clone()
        swap = (torch.rand(len(images)) < 0.5).tolist()
        slot = torch.randint(self.size, (len(images),)).tolist()
        count = int(self.count)
        for i in range(len(images)):
            if count < self.size:                     # filling up: store, return the image itself
                self.images[count] = images[i]
                count += 1
            elif swap[i]:                             # return a stored image, keep the new one
                out[i] = self.images[slot[i]]
                self.images[slot[i]] = images[i]
        self.count.fill_(count)
        return out


class LinearDecayAdam(torch.optim.Adam):
    """Adam whose learning rate holds for the first ``decay_start`` of ``total_steps`` of its own steps
    and then falls linearly to 0 at ``total_steps`` (CycleGAN's and StarGAN's schedule, counted in
    steps instead of epochs). The count lives in the param groups, which ``state_dict`` saves, so a
    resumed run continues the schedule where it was."""

    def __init__(self, params, lr: float, betas=(0.5, 0.999), total_steps: int = 1, decay_start: float = 0.5):
        if total_steps < 1 or not 0.0 <= decay_start <= 1.0:
            raise ValueError(f"LinearDecayAdam: need total_steps >= 1 and 0 <= decay_start <= 1, "
                             f"got {total_steps}, {decay_start}")
        super().__init__(params, lr=lr, betas=betas)
        for group in self.param_groups:
            group.update(initial_lr=lr, steps_done=0, total_steps=total_steps,
                         decay_from=int(decay_start * total_steps))

    @staticmethod
    def factor(steps_done: int, total_steps: int, decay_from: int) -> float:
        if steps_done < decay_from:
            return 1.0
        return max(0.0, (total_steps - steps_done) / max(1, total_steps - decay_from))

    def load_state_dict(self, state_dict) -> None:
        """The position in the schedule (steps done) and Adam's moments from `state_dict`; the schedule
        itself (lr, total_steps, decay start) from this optimizer's construction, i.e. the current config:
        a run resumed with more steps follows the schedule of its new length."""
        schedule = [{k: g[k] for k in ("initial_lr", "total_steps", "decay_from")} for g in self.param_groups]
        super().load_state_dict(state_dict)
        for g, keep in zip(self.param_groups, schedule):
            g.update(keep)

    @torch.no_grad()
    def step(self, closure=None):
        for g in self.param_groups:
            g["lr"] = g["initial_lr"] * self.factor(g["steps_done"], g["total_steps"], g["decay_from"])
            g["steps_done"] += 1
        return super().step(closure)
