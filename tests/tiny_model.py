"""A tiny model for the framework's tests (registered by the tests that need it, never by the package).

A noisy-input autoencoder on 8x8 digits: conv -> group_norm_silu -> conv, MSE. It uses the global RNG
(input noise) so that resume tests see RNG state restored, an EMA decoder, and the fused op."""
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

import genkernels
from genkernels import data, metrics
from genkernels.models.base import Config, Model


@dataclass
class TinyTestConfig(Config):
    image_size: int = 8
    hidden: int = 8
    noise: float = 0.1
    ema_decay: Optional[float] = 0.9
    batch_size: int = 16
    lr: float = 1e-2
    steps: int = 6


class TinyTest(Model):
    name = "tiny-test"
    description = "test-only noisy autoencoder"
    Config = TinyTestConfig
    presets = {"tiny": {}, "digits": {"hidden": 16, "steps": 20}}
    sample_options = {"--scale": dict(dest="scale", type=float, default=1.0, help="noise scale")}

    def __init__(self, config):
        super().__init__(config)
        self.enc = nn.Conv2d(config.in_channels, config.hidden, 3, padding=1)
        self.norm = nn.GroupNorm(4, config.hidden)
        self.dec = nn.Conv2d(config.hidden, config.in_channels, 3, padding=1)

    def ema_modules(self):
        return ["dec"]

    def reconstruct(self, x):
        h = self.enc(x)
        h = genkernels.group_norm_silu(h, 4, self.norm.weight, self.norm.bias)
        return torch.tanh(self.dec(h))

    def forward(self, batch, phase="main", step=0):
        x = batch["image"]
        noisy = x + self.config.noise * torch.randn_like(x)
        loss = F.mse_loss(self.reconstruct(noisy), x)
        return loss, {"mse": loss.detach()}

    @torch.no_grad()
    def preview(self, batch, generator):
        x = batch["image"]
        return torch.cat([x, self.reconstruct(x)])

    @torch.no_grad()
    def generate(self, num, generator, scale=1.0):
        c, s = self.config.in_channels, self.config.image_size
        z = torch.randn(num, c, s, s, generator=generator, device=self.dec.weight.device) * scale
        return self.reconstruct(z.clamp(-1, 1))

    @torch.no_grad()
    def evaluate(self, split="test", num=500, generator=None):
        x = data.load(self.config.data, split, self.config.image_size)["image"][:num]
        x = x.to(self.dec.weight.device)
        value = metrics.psnr(self.reconstruct(x), x)
        return {"psnr": metrics.bounds("psnr", value, num=len(x), image_size=self.config.image_size)}
