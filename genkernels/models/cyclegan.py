"""CycleGAN (Zhu et al. 2017, "Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial
Networks").

Two generators translate between unpaired domains, G_ab: A -> B and G_ba: B -> A, each judged by a
PatchGAN of its output domain with the least-squares GAN loss. Cycle consistency ties them:
|G_ba(G_ab(a)) - a| + |G_ab(G_ba(b)) - b| weighted by lambda = 10, plus the identity loss
|G_ab(b) - b| + |G_ba(a) - a| weighted by 0.5 lambda. The discriminators see fakes through a 50-image
history pool each; their loss is halved. Defaults are the authors' (junyanz/pytorch-CycleGAN-and-pix2pix):
ResNet generator (7x7 in/out convs with reflection padding, two stride-2 convs, 9 residual blocks at 256
px, instance norm without affine), n_layers = 3 PatchGAN, Adam(2e-4, beta1 = 0.5), the learning rate
constant for the first half of training then linear to 0. Instance norms run on the fused kernels
(``genkernels.nn.InstanceNorm2d``).

Phases are "g" then "d" per step, as the authors' loop: the discriminators train on the fakes the
generators made in the same step's "g" phase (reused, detached, when the batch is the same object).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .gan_layers import (GANConfig, GANModel, ImagePool, LinearDecayAdam, PatchDiscriminator, ResnetBlock,
                         d_loss, frozen, g_loss, init_normal_, norm_layer)

Tensor = torch.Tensor


@dataclass
class CycleGANConfig(GANConfig):
    grad_clip: Optional[float] = None   # the authors clip nothing
    data: str = "digits_inverted"   # an unpaired data set: "image" (domain A) and "image_b" (domain B)
    out_channels: int = 1           # channels of domain B (in_channels: domain A)
    ngf: int = 64
    ndf: int = 64
    n_blocks: int = 9               # residual blocks (authors: 9 at 256 px, 6 at 128 px)
    n_layers_d: int = 3             # PatchGAN depth (3: 70x70 patches)
    norm: str = "instance"
    lambda_cycle: float = 10.0
    lambda_identity: float = 0.5    # times lambda_cycle; needs in_channels == out_channels
    pool_size: int = 50
    decay_start: float = 0.5        # fraction of `steps` after which the learning rate falls linearly to 0


class ResnetGenerator(nn.Module):
    """The authors' ResNet generator: c7s1-ngf, d(2 ngf), d(4 ngf), n_blocks x R(4 ngf), u(2 ngf), u(ngf),
    c7s1-out with tanh; reflection padding. Convs followed by a norm have no bias (the norm would cancel
    it; the authors' code keeps 5248 such weights at ngf = 64, 9 blocks)."""

    def __init__(self, in_channels: int, out_channels: int, ngf: int = 64, n_blocks: int = 9,
                 norm: str = "instance"):
        super().__init__()
        bias = norm == "none"
        layers = [nn.Conv2d(in_channels, ngf, 7, padding=3, padding_mode="reflect", bias=bias),
                  norm_layer(norm, ngf), nn.ReLU()]
        for i in range(2):
            c = ngf * 2 ** i
            layers += [nn.Conv2d(c, 2 * c, 3, 2, 1, bias=bias), norm_layer(norm, 2 * c), nn.ReLU()]
        layers += [ResnetBlock(4 * ngf, norm, "reflect", bias=bias) for _ in range(n_blocks)]
        for i in range(2):
            c = ngf * 2 ** (2 - i)
            layers += [nn.ConvTranspose2d(c, c // 2, 3, 2, 1, output_padding=1, bias=bias),
                       norm_layer(norm, c // 2), nn.ReLU()]
        layers += [nn.Conv2d(ngf, out_channels, 7, padding=3, padding_mode="reflect"), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


def _channels(x: Tensor, c: int) -> Tensor:
    """x shown with c channels (grey repeated to RGB, RGB averaged to grey) for a common grid."""
    if x.shape[1] == c:
        return x
    return x.mean(1, keepdim=True).expand(-1, c, -1, -1)


class CycleGAN(GANModel):
    name = "cyclegan"
    description = "CycleGAN: two ResNet generators, two PatchGANs, LSGAN + cycle + identity losses, history pool (unpaired data)"
    Config = CycleGANConfig
    presets = {
        "tiny": dict(image_size=16, ngf=8, ndf=8, n_blocks=2, n_layers_d=2, batch_size=4, steps=20),
        # 16x16 (the metrics classifier's size) keeps a run to minutes on a shared CPU
        "digits": dict(image_size=16, ngf=16, ndf=32, n_blocks=3, n_layers_d=2, batch_size=4, steps=500),
        "photos": dict(data="photos_unpaired", in_channels=3, out_channels=3, image_size=32, ngf=16, ndf=32,
                       n_blocks=3, batch_size=4, steps=500),
        # the authors' defaults: resnet_9blocks at 256x256, batch size 1, 200 epochs (half of them decaying)
        "paper": dict(data="photos_unpaired", in_channels=3, out_channels=3, image_size=256, ngf=64, ndf=64,
                      n_blocks=9, batch_size=1, steps=200_000),
    }
    sample_options = {"--direction": dict(dest="direction", choices=["ab", "ba"], default="ab",
                                          help="translate held-out A images to B (ab) or B to A (ba)")}

    def __init__(self, config: CycleGANConfig):
        super().__init__(config)
        c = config
        if c.lambda_identity and c.in_channels != c.out_channels:
            raise ValueError(f"cyclegan: lambda_identity needs in_channels == out_channels, got "
                             f"{c.in_channels} and {c.out_channels}; set lambda_identity=0")
        self.generator = nn.ModuleDict({"ab": ResnetGenerator(c.in_channels, c.out_channels, c.ngf, c.n_blocks, c.norm),
                                        "ba": ResnetGenerator(c.out_channels, c.in_channels, c.ngf, c.n_blocks, c.norm)})
        # discriminator["b"] judges domain B (real B against G_ab's fakes), ["a"] domain A
        self.discriminator = nn.ModuleDict({"a": PatchDiscriminator(c.in_channels, c.ndf, c.n_layers_d, c.norm),
                                            "b": PatchDiscriminator(c.out_channels, c.ndf, c.n_layers_d, c.norm)})
        self.pool_a = ImagePool(c.pool_size, (c.in_channels, c.image_size, c.image_size))
        self.pool_b = ImagePool(c.pool_size, (c.out_channels, c.image_size, c.image_size))
        init_normal_(self)
        self._fakes = None          # (a, b, fake_a, fake_b) of the last "g" phase, for its "d" phase

    def phases(self, step: int):
        return ("g", "d")

    def optimizers(self) -> Dict[str, torch.optim.Optimizer]:
        c = self.config
        kw = dict(betas=(c.beta1, c.beta2), total_steps=c.steps, decay_start=c.decay_start)
        return {"g": LinearDecayAdam(self.generator.parameters(), lr=c.lr, **kw),
                "d": LinearDecayAdam(self.discriminator.parameters(), lr=c.lr_d or c.lr, **kw)}

    def cycle_losses(self, a: Tensor, b: Tensor):
        """The fakes and the generators' loss terms (GAN, cycle, identity) on an unpaired batch."""
        G, D = self.generator, self.discriminator
        fake_b, fake_a = G["ab"](a), G["ba"](b)
        with frozen(D):
            gan = g_loss("lsgan", D["b"](fake_b)) + g_loss("lsgan", D["a"](fake_a))
        cycle = F.l1_loss(G["ba"](fake_b), a) + F.l1_loss(G["ab"](fake_a), b)
        identity = (F.l1_loss(G["ab"](b), b) + F.l1_loss(G["ba"](a), a)) if self.config.lambda_identity \
            else torch.zeros((), device=a.device)
        return fake_a, fake_b, gan, cycle, identity

    def forward(self, batch: Dict[str, Tensor], phase: str = "g", step: int = 0):
        c = self.config
        a, b = batch["image"], batch["image_b"]
        if phase == "g":
            fake_a, fake_b, gan, cycle, identity = self.cycle_losses(a, b)
            self._fakes = (a, b, fake_a.detach(), fake_b.detach())
            loss = gan + c.lambda_cycle * cycle + c.lambda_cycle * c.lambda_identity * identity
            return loss, {"g_loss": loss, "g_gan": gan, "cycle": cycle, "identity": identity}
        if phase == "d":
            cached, self._fakes = self._fakes, None
            if cached is not None and cached[0] is a and cached[1] is b:
                fake_a, fake_b = cached[2:]
            else:
                with torch.no_grad():
                    fake_a, fake_b = self.generator["ba"](b), self.generator["ab"](a)
            D = self.discriminator
            loss_b = d_loss("lsgan", D["b"](b), D["b"](self.pool_b(fake_b)))
            loss_a = d_loss("lsgan", D["a"](a), D["a"](self.pool_a(fake_a)))
            loss = loss_a + loss_b
            return loss, {"d_loss": loss, "d_a": loss_a, "d_b": loss_b}
        raise ValueError(f"cyclegan: unknown phase {phase!r}; phases are 'g' and 'd'")

    # ------------------------------------------------------------------ inference
    def _run(self, net: str, x: Tensor) -> Tensor:
        device = next(self.parameters()).device
        return torch.cat([self.generator[net](x[i: i + 256].to(device)).cpu() for i in range(0, len(x), 256)])

    @torch.no_grad()
    def preview(self, batch: Dict[str, Tensor], generator: torch.Generator) -> Tensor:
        """6 rows of (a, G_ab(a), G_ba(G_ab(a)), b, G_ba(b), G_ab(G_ba(b))) in B's channels (36 images: the
        trainer's square grid is 6 wide)."""
        a, b = batch["image"][:6].cpu(), batch["image_b"][:6].cpu()
        fake_b, fake_a = self._run("ab", a), self._run("ba", b)
        cols = [a, fake_b, self._run("ba", fake_b), b, fake_a, self._run("ab", fake_a)]
        return torch.stack([_channels(x, self.config.out_channels) for x in cols], 1).flatten(0, 1)

    @torch.no_grad()
    def generate(self, num: int, generator: torch.Generator, direction: str = "ab", **options: Any) -> Tensor:
        """Translations of the first `num` held-out images of domain A (direction "ab") or B ("ba")."""
        from .. import data
        if direction not in ("ab", "ba"):
            raise ValueError(f"cyclegan: `direction` must be 'ab' or 'ba', got {direction!r}")
        c = self.config
        d = data.load(c.data, "test", c.image_size)
        return self._run(direction, d["image" if direction == "ab" else "image_b"][:num])

    @torch.no_grad()
    def evaluate(self, split: str = "test", num: int = 500, generator: Optional[torch.Generator] = None
                 ) -> Dict[str, Any]:
        """Cycle error (mean |G_ba(G_ab(a)) - a| and |G_ab(G_ba(b)) - b|, PSNR of the cycles; floor 0 /
        None) on `num` held-out images of each domain; with digit labels ("label", "label_b"), the in-repo
        classifier's accuracy on translations to the light-on-dark domain A (content kept) next to its
        accuracy on real A images (the floor)."""
        from .. import data, metrics
        c = self.config
        d = data.load(c.data, split, c.image_size)
        a, b = d["image"][:num], d["image_b"][:num]
        fake_b, fake_a = self._run("ab", a), self._run("ba", b)
        rec_a, rec_b = self._run("ba", fake_b), self._run("ab", fake_a)
        out: Dict[str, Any] = {"num": len(a)}
        for name, x, rec in (("a", a, rec_a), ("b", b, rec_b)):
            out[f"cycle_l1_{name}"] = {"value": float((rec - x).abs().mean()), "floor": 0.0}
            out[f"cycle_psnr_{name}"] = {"value": metrics.psnr(rec, x), "floor": None}
        if "label_b" in d:
            out["digits_accuracy_ba"] = {"value": metrics.digits_accuracy(fake_a, d["label_b"][:num]),
                                         "floor": metrics.digits_accuracy(a, d["label"][:num])}
        return out
