"""Class-conditional GAN: a generator conditioned through conditional normalisation (instance norm whose
per-channel scale and bias are looked up from the class, one fused ``genkernels.adain`` call), and a
projection discriminator (Miyato & Koyama 2018): D(x, y) = psi(phi(x)) + <embed(y), phi(x)>.

    model = genkernels.models.build("cgan", "digits")
    images = model.generate(16, torch.Generator().manual_seed(0), class_label=3)   # `genkernels sample cgan --class 3`
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import adain
from .gan_layers import GANConfig, GANModel, check_loss_kind, d_loss, frozen, g_loss, lrelu, sample_metrics

Tensor = torch.Tensor


@dataclass
class CGANConfig(GANConfig):
    image_size: int = 16
    num_classes: int = 10
    z_dim: int = 64
    channels: Tuple[int, ...] = (64, 32, 16)    # generator channels at 4x4, 8x8, ... (D uses them reversed)
    loss: str = "hinge"
    lr: float = 2e-4
    beta1: float = 0.0                          # the projection-discriminator paper's Adam(2e-4, 0, 0.9)
    beta2: float = 0.9
    grad_clip: Optional[float] = None


class ConditionalNorm(nn.Module):
    """Instance norm with a per-class affine: adain(x, scale[y], bias[y]); starts as plain instance norm."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.scale = nn.Embedding(num_classes, channels)
        self.bias = nn.Embedding(num_classes, channels)
        nn.init.ones_(self.scale.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return adain(x, self.scale(y), self.bias(y))


class Generator(nn.Module):
    def __init__(self, c: CGANConfig):
        super().__init__()
        ch = c.channels
        self.fc = nn.Linear(c.z_dim, ch[0] * 16)
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in zip(ch, ch[1:]))
        self.norms = nn.ModuleList(ConditionalNorm(n, c.num_classes) for n in ch)
        self.to_image = nn.Conv2d(ch[-1], c.in_channels, 3, padding=1)

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        x = F.relu(self.norms[0](self.fc(z).reshape(len(z), -1, 4, 4), y))
        for conv, norm in zip(self.convs, self.norms[1:]):
            x = F.relu(norm(conv(F.interpolate(x, scale_factor=2.0, mode="nearest")), y))
        return torch.tanh(self.to_image(x))


class Discriminator(nn.Module):
    """Strided convs to 4x4, features phi(x) summed over positions, a linear head plus the projection."""

    def __init__(self, c: CGANConfig):
        super().__init__()
        ch = c.channels[::-1]
        self.from_image = nn.Conv2d(c.in_channels, ch[0], 3, padding=1)
        self.downs = nn.ModuleList(nn.Conv2d(a, b, 4, 2, 1) for a, b in zip(ch, ch[1:]))
        self.head = nn.Linear(ch[-1], 1)
        self.embed = nn.Embedding(c.num_classes, ch[-1])

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h = lrelu(self.from_image(x))
        for down in self.downs:
            h = lrelu(down(h))
        h = h.sum(dim=(2, 3))
        return self.head(h).squeeze(1) + (self.embed(y) * h).sum(1)


class CGAN(GANModel):
    name = "cgan"
    description = "Class-conditional GAN: conditional norm on the adain op, projection discriminator"
    Config = CGANConfig
    sample_options = {"--class": dict(dest="class_label", type=int, default=None,
                                      help="the class (digit) to draw; default: cycle through the classes")}
    presets: Dict[str, Dict[str, Any]] = {
        "tiny": dict(image_size=8, z_dim=8, channels=(16, 8), batch_size=8, steps=4),
        "digits": dict(image_size=16, z_dim=64, channels=(64, 32, 16), batch_size=64, steps=1500),
        # the projection discriminator paper's 32x32 scale (CIFAR-10 there; the photos' two classes here)
        "paper": dict(data="photos", in_channels=3, num_classes=2, image_size=32, z_dim=128,
                      channels=(256, 256, 256, 128), batch_size=64, steps=50000),
    }

    def __init__(self, config: CGANConfig):
        super().__init__(config)
        check_loss_kind(config.loss)
        if len(config.channels) < 2 or 4 * 2 ** (len(config.channels) - 1) != config.image_size:
            raise ValueError(f"`channels` needs one entry per resolution 4, 8, ..., image_size={config.image_size}; "
                             f"got {config.channels}")
        self.generator = Generator(config)
        self.discriminator = Discriminator(config)

    def forward(self, batch: Dict[str, Tensor], phase: str = "d", step: int = 0) -> Tuple[Tensor, Dict[str, Tensor]]:
        real, label = batch["image"], batch["label"]
        fake_label = torch.randint(0, self.config.num_classes, label.shape, device=label.device)
        fake = self.generator(self.randn(len(real), self.config.z_dim), fake_label)
        if phase == "d":
            real_logits = self.discriminator(real, label)
            fake_logits = self.discriminator(fake.detach(), fake_label)
            loss = d_loss(self.config.loss, real_logits, fake_logits)
            return loss, {"d_loss": loss, "d_real": real_logits.mean(), "d_fake": fake_logits.mean()}
        if phase == "g":
            with frozen(self.discriminator):
                loss = g_loss(self.config.loss, self.discriminator(fake, fake_label))
            return loss, {"g_loss": loss}
        raise ValueError(f"`phase` must be 'd' or 'g', got {phase!r}")

    @torch.no_grad()
    def generate(self, num: int, generator: torch.Generator, class_label: Optional[int] = None, **options: Any
                 ) -> Tensor:
        K = self.config.num_classes
        if class_label is None:
            labels = torch.arange(num) % K
        elif isinstance(class_label, int) and 0 <= class_label < K:
            labels = torch.full((num,), class_label)
        else:
            raise ValueError(f"`class_label` must be an int in [0, {K}), got {class_label!r}")
        z = self.randn(num, self.config.z_dim, generator=generator)
        return self.generator(z, labels.to(z.device))

    @torch.no_grad()
    def evaluate(self, split: str = "test", num: int = 500, generator: Optional[torch.Generator] = None
                 ) -> Dict[str, Any]:
        """FD-digits / KID of samples cycling through the classes, and the digits classifier's accuracy
        on num // num_classes samples of each requested class (with its floor and ceiling)."""
        from .. import metrics
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        out = sample_metrics(self, self.generate, split, num, generator)
        if self.config.data == "digits":
            per_class = max(1, num // self.config.num_classes)
            labels = torch.arange(self.config.num_classes).repeat_interleave(per_class)
            images = torch.cat([self.generate(per_class, generator, class_label=k).cpu()
                                for k in range(self.config.num_classes)])
            acc = metrics.digits_accuracy(images, labels)
            out["digits_accuracy"] = metrics.bounds("digits_accuracy", acc, len(labels), self.config.image_size)
        return out
