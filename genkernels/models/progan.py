"""Progressive GAN (Karras et al. 2018): generator and critic grow from 4x4 by doubling the resolution,
each new block faded in linearly (alpha 0 -> 1); equalised learning rate, pixel norm in the generator,
minibatch standard deviation in the critic, WGAN-GP with the drift term, generator EMA.

    model = genkernels.models.build("progan", "digits")

Schedule (config): ``steps_per_phase`` steps at 4x4, then for each doubling ``steps_per_phase`` steps of
fade-in and as many at full strength, then the final resolution until the end. Level and alpha are a
function of the step number, so a resumed run grows exactly as an uninterrupted one. Real images are
shown at the current resolution (average-pooled) and, during a fade, blended between the half and the
full resolution with the same alpha, as in the paper.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .gan_layers import (EqualConv2d, EqualLinear, GANConfig, GANModel, GrowingDiscriminator, frozen,
                         gradient_penalty, lrelu, pixel_norm)

Tensor = torch.Tensor


@dataclass
class ProGANConfig(GANConfig):
    image_size: int = 16
    z_dim: int = 64
    channels: Tuple[int, ...] = (64, 32, 16)      # per resolution 4, 8, ..., image_size
    steps_per_phase: int = 250                    # steps at 4x4, then per fade-in and per stable phase
    gp_weight: float = 10.0
    drift: float = 0.001                          # epsilon_drift * E[D(real)^2] keeps the critic near 0
    mbstd_group: int = 4
    lr: float = 1e-3
    beta1: float = 0.0
    beta2: float = 0.99
    ema_decay: Optional[float] = 0.999
    grad_clip: Optional[float] = None


def upsample(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


class GBlock(nn.Module):
    """Upsample 2x, then two 3x3 equalised convs each followed by LeakyReLU and pixel norm."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = EqualConv2d(in_channels, out_channels, 3, padding=1)
        self.conv2 = EqualConv2d(out_channels, out_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = pixel_norm(lrelu(self.conv1(upsample(x))))
        return pixel_norm(lrelu(self.conv2(x)))


class Generator(nn.Module):
    def __init__(self, c: ProGANConfig):
        super().__init__()
        ch = c.channels
        self.input = EqualLinear(c.z_dim, ch[0] * 16, gain=math.sqrt(2) / 4)   # the paper's 4x4 "dense" conv
        self.conv = EqualConv2d(ch[0], ch[0], 3, padding=1)
        self.blocks = nn.ModuleList(GBlock(a, b) for a, b in zip(ch, ch[1:]))
        self.to_rgb = nn.ModuleList(EqualConv2d(n, c.in_channels, 1, gain=1.0) for n in ch)

    def forward(self, z: Tensor, level: Optional[int] = None, alpha: float = 1.0) -> Tensor:
        """Images of side 4 * 2^level; with alpha < 1 the top block is blended over the upsampled level - 1."""
        level = len(self.blocks) if level is None else level
        x = pixel_norm(lrelu(self.input(pixel_norm(z)).reshape(len(z), -1, 4, 4)))
        x = pixel_norm(lrelu(self.conv(x)))
        skip = None
        for i, block in enumerate(self.blocks[:level], start=1):
            if i == level and alpha < 1:
                skip = upsample(self.to_rgb[i - 1](x))
            x = block(x)
        out = self.to_rgb[level](x)
        return out if skip is None else torch.lerp(skip, out, alpha)


class ProGAN(GANModel):
    name = "progan"
    description = "Progressive GAN: growing G and D with fade-in, equalised lr, pixel norm, WGAN-GP"
    Config = ProGANConfig
    presets: Dict[str, Dict[str, Any]] = {
        "tiny": dict(image_size=8, z_dim=16, channels=(16, 8), steps_per_phase=2, batch_size=8, steps=6),
        "digits": dict(image_size=16, z_dim=64, channels=(64, 32, 16), steps_per_phase=250, batch_size=32,
                       steps=1800, ema_decay=0.99),   # a short run: 0.999 would still hold the early phases
        # the paper's CelebA-HQ 1024x1024 networks (800k images per phase at batch 16)
        "paper": dict(data="photos", in_channels=3, image_size=1024, z_dim=512,
                      channels=(512, 512, 512, 512, 256, 128, 64, 32, 16), steps_per_phase=50000,
                      batch_size=16, lr=1e-3, steps=850000),
    }

    def __init__(self, config: ProGANConfig):
        super().__init__(config)
        if not config.channels or 4 * 2 ** (len(config.channels) - 1) != config.image_size:
            raise ValueError(f"`channels` needs one entry per resolution 4, 8, ..., image_size={config.image_size}; "
                             f"got {config.channels}")
        if config.steps_per_phase < 1:
            raise ValueError(f"`steps_per_phase` must be >= 1, got {config.steps_per_phase}")
        self.generator = Generator(config)
        self.discriminator = GrowingDiscriminator(config.channels, config.in_channels, config.mbstd_group)
        self.register_buffer("last_step", torch.zeros((), dtype=torch.int64))   # last trained step: sampling's level

    @property
    def max_level(self) -> int:
        return len(self.config.channels) - 1

    def schedule(self, step: int) -> Tuple[int, float]:
        """(level, alpha) at a training step: resolution 4 * 2^level, fade-in weight of its top block."""
        P = self.config.steps_per_phase
        if step < P:
            return 0, 1.0
        level, within = divmod(step - P, 2 * P)
        if level + 1 > self.max_level:
            return self.max_level, 1.0
        return level + 1, min(1.0, within / P)

    def real_at(self, images: Tensor, level: int, alpha: float) -> Tensor:
        """Real images at resolution 4 * 2^level, faded between the half and the full resolution."""
        x = F.avg_pool2d(images, 2 ** (self.max_level - level)) if level < self.max_level else images
        if alpha < 1 and level > 0:
            x = torch.lerp(upsample(F.avg_pool2d(x, 2)), x, alpha)
        return x

    def forward(self, batch: Dict[str, Tensor], phase: str = "d", step: int = 0) -> Tuple[Tensor, Dict[str, Tensor]]:
        c = self.config
        level, alpha = self.schedule(step)
        self.last_step.fill_(step)
        fake = self.generator(self.randn(len(batch["image"]), c.z_dim), level, alpha)
        critic = lambda x: self.discriminator(x, level, alpha)    # noqa: E731
        at = {"level": torch.tensor(float(level)), "alpha": torch.tensor(alpha)}
        if phase == "d":
            real = self.real_at(batch["image"], level, alpha)
            real_out, fake_out = critic(real), critic(fake.detach())
            wdist = real_out.mean() - fake_out.mean()
            gp = gradient_penalty(critic, real, fake)
            loss = -wdist + c.gp_weight * gp + c.drift * real_out.pow(2).mean()
            return loss, {"d_loss": loss, "wasserstein": wdist, "gp": gp, **at}
        if phase == "g":
            with frozen(self.discriminator):
                loss = -critic(fake).mean()
            return loss, {"g_loss": loss, **at}
        raise ValueError(f"`phase` must be 'd' or 'g', got {phase!r}")

    @torch.no_grad()
    def generate(self, num: int, generator: torch.Generator, **options: Any) -> Tensor:
        """Samples at the resolution reached by the last trained step, upsampled to image_size."""
        level, alpha = self.schedule(int(self.last_step))
        x = self.generator(self.randn(num, self.config.z_dim, generator=generator), level, alpha)
        return F.interpolate(x, size=self.config.image_size, mode="nearest").clamp(-1, 1)
