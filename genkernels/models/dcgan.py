"""DCGAN (Radford et al. 2015): a transposed-convolution generator with batch norm and ReLU, a strided
convolution discriminator with LeakyReLU(0.2), the non-saturating GAN loss, N(0, 0.02) initialisation
and Adam(2e-4, beta1 = 0.5).

    model = genkernels.models.build("dcgan", "digits")

For an image of side S = 4 * 2^k the generator maps z [N, z_dim, 1, 1] to 4x4 with a 4x4 transposed
conv, then doubles the side k times (4x4 stride-2 transposed convs), halving the channels each time;
the discriminator mirrors it. No fused op here: DCGAN is the plain baseline of the GAN family.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from .gan_layers import GANConfig, GANModel, check_loss_kind, d_loss, frozen, g_loss, init_normal_

Tensor = torch.Tensor


@dataclass
class DCGANConfig(GANConfig):
    image_size: int = 16
    z_dim: int = 100
    g_channels: int = 64            # ngf: channels of the generator's last hidden layer (doubling inwards)
    d_channels: int = 64            # ndf: channels of the discriminator's first layer
    loss: str = "nonsaturating"
    lr: float = 2e-4
    batch_size: int = 64
    grad_clip: Optional[float] = None


def _num_doublings(image_size: int) -> int:
    k = (image_size // 4).bit_length() - 1
    if image_size < 8 or 4 * 2 ** k != image_size:
        raise ValueError(f"`image_size` must be 4 * 2^k with k >= 1, got {image_size}")
    return k


class Generator(nn.Module):
    def __init__(self, c: DCGANConfig):
        super().__init__()
        k = _num_doublings(c.image_size)
        ch = [c.g_channels * 2 ** i for i in reversed(range(k))]       # 4x4 ... S/2 x S/2
        layers = [nn.ConvTranspose2d(c.z_dim, ch[0], 4, 1, 0, bias=False), nn.BatchNorm2d(ch[0]), nn.ReLU(True)]
        for cin, cout in zip(ch, ch[1:]):
            layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(ch[-1], c.in_channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z[:, :, None, None])


class Discriminator(nn.Module):
    def __init__(self, c: DCGANConfig):
        super().__init__()
        k = _num_doublings(c.image_size)
        ch = [c.d_channels * 2 ** i for i in range(k)]                   # S/2 x S/2 ... 4x4
        layers = [nn.Conv2d(c.in_channels, ch[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        for cin, cout in zip(ch, ch[1:]):
            layers += [nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(ch[-1], 1, 4, 1, 0, bias=False)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).flatten()                                     # one logit per image


class DCGAN(GANModel):
    name = "dcgan"
    description = "DCGAN: transposed-conv generator with batch norm, non-saturating GAN loss"
    Config = DCGANConfig
    presets: Dict[str, Dict[str, Any]] = {
        "tiny": dict(image_size=8, z_dim=8, g_channels=8, d_channels=8, batch_size=8, steps=4),
        "digits": dict(image_size=16, z_dim=64, g_channels=32, d_channels=32, batch_size=64, steps=1500),
        # the paper's 64x64 networks (LSUN / faces there; the shipped photographs here)
        "paper": dict(data="photos", in_channels=3, image_size=64, z_dim=100, g_channels=64, d_channels=64,
                      batch_size=128, steps=20000),
    }

    def __init__(self, config: DCGANConfig):
        super().__init__(config)
        check_loss_kind(config.loss)
        self.generator = init_normal_(Generator(config))
        self.discriminator = init_normal_(Discriminator(config))

    def forward(self, batch: Dict[str, Tensor], phase: str = "d", step: int = 0) -> Tuple[Tensor, Dict[str, Tensor]]:
        real = batch["image"]
        fake = self.generator(self.randn(len(real), self.config.z_dim))
        if phase == "d":
            real_logits, fake_logits = self.discriminator(real), self.discriminator(fake.detach())
            loss = d_loss(self.config.loss, real_logits, fake_logits)
            return loss, {"d_loss": loss, "d_real": real_logits.mean(), "d_fake": fake_logits.mean()}
        if phase == "g":
            with frozen(self.discriminator):
                loss = g_loss(self.config.loss, self.discriminator(fake))
            return loss, {"g_loss": loss}
        raise ValueError(f"`phase` must be 'd' or 'g', got {phase!r}")

    @torch.no_grad()
    def generate(self, num: int, generator: torch.Generator, **options: Any) -> Tensor:
        return self.generator(self.randn(num, self.config.z_dim, generator=generator))
