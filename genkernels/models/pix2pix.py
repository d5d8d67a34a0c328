"""Pix2Pix (Isola et al. 2017, "Image-to-Image Translation with Conditional Adversarial Networks").

A U-Net generator maps an input image A to an output B; a 70x70 PatchGAN judges (A, B) pairs, real or
generated. The generator's loss is the GAN loss plus lambda * L1 to the paired target (lambda = 100),
the discriminator's loss is halved. Defaults are the authors' (junyanz/pytorch-CycleGAN-and-pix2pix):
ngf = ndf = 64, unet_256 (8 downsamplings), batch norm, dropout 0.5 in the decoder's three innermost
8*ngf blocks, vanilla GAN loss, Adam(2e-4, beta1 = 0.5), N(0, 0.02) init.

Deviations, each for a reason: the digits presets use instance norm (on the fused kernels), which is
what the authors' batch norm computes at their batch size of 1, since we train with larger batches;
sampling runs in eval mode, so dropout is off there (the paper keeps it on as noise). The generator runs
once in each phase (phase "d" without a gradient), so the two phases see different dropout masks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .gan_layers import GANConfig, GANModel, PatchDiscriminator, d_loss, frozen, g_loss, init_normal_, norm_layer

Tensor = torch.Tensor


@dataclass
class Pix2PixConfig(GANConfig):
    grad_clip: Optional[float] = None   # the authors clip nothing
    data: str = "digits_thick"      # a paired data set: "image" (input A) and "target" (output B)
    out_channels: int = 1
    ngf: int = 64                   # generator width (first layer)
    ndf: int = 64                   # discriminator width
    num_downs: int = 5              # U-Net depth; image_size / 2**num_downs = 1 at the bottleneck
    num_dropout: int = 3            # decoder blocks just outside the innermost with dropout 0.5
    n_layers_d: int = 3             # PatchGAN depth (3: 70x70 patches)
    norm: str = "batch"             # "batch" (authors) or "instance" (fused kernels)
    lambda_l1: float = 100.0


class UNetGenerator(nn.Module):
    """The authors' U-Net: num_downs 4x4 stride-2 convs (LeakyReLU 0.2 before, norm after, except the
    outermost and innermost), mirrored by transposed convs (ReLU before, norm after), each decoder level
    fed the encoder's output of the same level concatenated to the level below; tanh output.
    Widths ngf * (1, 2, 4, 8, 8, ...)."""

    def __init__(self, in_channels: int, out_channels: int, ngf: int, num_downs: int, num_dropout: int,
                 norm: str):
        super().__init__()
        if num_downs < 2 or not 0 <= num_dropout <= num_downs - 2:
            raise ValueError(f"UNetGenerator: need num_downs >= 2 and 0 <= num_dropout <= num_downs - 2, "
                             f"got num_downs={num_downs}, num_dropout={num_dropout}")
        # a conv followed by a norm has no bias (the norm cancels it); the two that are not keep the
        # authors' choice (none with batch norm)
        bias, bias_unnormed = norm == "none", norm != "batch"
        width = [ngf * min(2 ** i, 8) for i in range(num_downs)]
        outer = [in_channels] + width[:-1]          # channels entering each level
        self.down, self.up = nn.ModuleList(), nn.ModuleList()
        for i in range(num_downs):
            outermost, innermost = i == 0, i == num_downs - 1
            down = [] if outermost else [nn.LeakyReLU(0.2)]
            normed = not (outermost or innermost)
            down.append(nn.Conv2d(outer[i], width[i], 4, 2, 1, bias=bias if normed else bias_unnormed))
            if normed:
                down.append(norm_layer(norm, width[i]))
            self.down.append(nn.Sequential(*down))

            up_in = width[i] if innermost else 2 * width[i]          # innermost: no skip below it
            if outermost:
                up = [nn.ReLU(), nn.ConvTranspose2d(up_in, out_channels, 4, 2, 1), nn.Tanh()]
            else:
                up = [nn.ReLU(), nn.ConvTranspose2d(up_in, outer[i], 4, 2, 1, bias=bias), norm_layer(norm, outer[i])]
                if num_downs - 1 - num_dropout <= i < num_downs - 1:
                    up.append(nn.Dropout(0.5))
            self.up.append(nn.Sequential(*up))

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        for down in self.down:
            x = down(x)
            skips.append(x)
        x = self.up[-1](skips[-1])
        for i in range(len(self.up) - 2, -1, -1):
            x = self.up[i](torch.cat([skips[i], x], dim=1))
        return x


class Pix2Pix(GANModel):
    name = "pix2pix"
    description = "Pix2Pix: U-Net generator, 70x70 PatchGAN on (input, output) pairs, GAN + 100 L1 (paired data)"
    Config = Pix2PixConfig
    presets = {
        "tiny": dict(image_size=16, ngf=8, ndf=8, num_downs=4, num_dropout=1, n_layers_d=2, norm="instance",
                     batch_size=4, steps=20),
        # 16x16 (the metrics classifier's size) keeps a run to minutes on a shared CPU
        "digits": dict(image_size=16, ngf=32, ndf=32, num_downs=4, num_dropout=1, n_layers_d=2,
                       norm="instance", batch_size=16, steps=500),
        "photos": dict(data="photos_gray", in_channels=1, out_channels=3, image_size=32, ngf=32, ndf=32,
                       num_downs=5, num_dropout=1, norm="instance", batch_size=16, steps=500),
        # the authors' defaults: unet_256, 256x256, batch size 1, batch norm
        "paper": dict(data="photos_gray", in_channels=1, out_channels=3, image_size=256, ngf=64, ndf=64,
                      num_downs=8, num_dropout=3, norm="batch", batch_size=1, steps=200_000),
    }

    def __init__(self, config: Pix2PixConfig):
        super().__init__(config)
        c = config
        if c.image_size % 2 ** c.num_downs:
            raise ValueError(f"pix2pix: image_size {c.image_size} must be divisible by 2**num_downs = {2 ** c.num_downs}")
        self.generator = UNetGenerator(c.in_channels, c.out_channels, c.ngf, c.num_downs, c.num_dropout, c.norm)
        self.discriminator = PatchDiscriminator(c.in_channels + c.out_channels, c.ndf, c.n_layers_d, c.norm)
        init_normal_(self)

    def forward(self, batch: Dict[str, Tensor], phase: str = "d", step: int = 0):
        a, b = batch["image"], batch["target"]
        if phase == "d":
            with torch.no_grad():
                fake = self.generator(a)
            real_logits = self.discriminator(torch.cat([a, b], 1))
            fake_logits = self.discriminator(torch.cat([a, fake], 1))
            loss = 0.5 * d_loss("nonsaturating", real_logits, fake_logits)
            return loss, {"d_loss": loss, "d_real": torch.sigmoid(real_logits).mean(),
                          "d_fake": torch.sigmoid(fake_logits).mean()}
        if phase == "g":
            fake = self.generator(a)
            with frozen(self.discriminator):
                gan = g_loss("nonsaturating", self.discriminator(torch.cat([a, fake], 1)))
            l1 = F.l1_loss(fake, b)
            loss = gan + self.config.lambda_l1 * l1
            return loss, {"g_loss": loss, "g_gan": gan, "l1": l1}
        raise ValueError(f"pix2pix: unknown phase {phase!r}; phases are 'd' and 'g'")

    def _as_output(self, a: Tensor) -> Tensor:
        """The input shown (or used as a baseline) in the output's channels (grey repeated to RGB)."""
        return a if a.shape[1] == self.config.out_channels else a.mean(1, keepdim=True).expand(
            -1, self.config.out_channels, -1, -1)

    @torch.no_grad()
    def translate(self, a: Tensor) -> Tensor:
        device = next(self.parameters()).device
        return self.generator(a.to(device))

    @torch.no_grad()
    def preview(self, batch: Dict[str, Tensor], generator: torch.Generator) -> Tensor:
        """12 (input, output, target) triples: 36 images, which the trainer's square grid lays out two
        triples a row."""
        a, b = batch["image"][:12], batch["target"][:12]
        fake = self.translate(a).to(b.device)
        return torch.stack([self._as_output(a), fake, b], 1).flatten(0, 1)

    @torch.no_grad()
    def generate(self, num: int, generator: torch.Generator, **options: Any) -> Tensor:
        """Translations of the first `num` held-out inputs (deterministic: dropout is off in eval mode)."""
        from .. import data
        c = self.config
        a = data.load(c.data, "test", c.image_size)["image"][:num]
        return torch.cat([self.translate(a[i: i + 256]).cpu() for i in range(0, len(a), 256)])

    @torch.no_grad()
    def evaluate(self, split: str = "test", num: int = 500, generator: Optional[torch.Generator] = None
                 ) -> Dict[str, Any]:
        """L1 and PSNR of translations of `num` held-out inputs against their targets; the input itself
        as the output is the baseline a model must beat, a perfect translation the floor (0 / None)."""
        from .. import data, metrics
        c = self.config
        d = data.load(c.data, split, c.image_size)
        a, b = d["image"][:num], d["target"][:num]
        fake = torch.cat([self.translate(a[i: i + 256]).cpu() for i in range(0, len(a), 256)])
        same = self._as_output(a)
        return {"num": len(a),
                "l1": {"value": float((fake - b).abs().mean()), "floor": 0.0, "baseline_input": float((same - b).abs().mean())},
                "psnr": {"value": metrics.psnr(fake, b), "floor": None, "baseline_input": metrics.psnr(same, b)}}
