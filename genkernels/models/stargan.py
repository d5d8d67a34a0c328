"""StarGAN (Choi et al. 2018, "StarGAN: Unified Generative Adversarial Networks for Multi-Domain
Image-to-Image Translation").

One generator G(x, c) translates an image to any target domain c (a vector of binary attributes,
tiled over the image and concatenated to it as extra input channels). The discriminator has two heads
on one trunk: a PatchGAN real/fake map D_src and a domain classifier D_cls. Losses (lambda_cls = 1,
lambda_rec = 10, lambda_gp = 10):

    D:  -D_src(x) + D_src(G(x, c_trg)) + lambda_gp GP  + lambda_cls BCE(D_cls(x), c_org)     real domains
    G:  -D_src(G(x, c_trg))  + lambda_rec |x - G(G(x, c_trg), c_org)|  + lambda_cls BCE(D_cls(G(x, c_trg)), c_trg)

with WGAN-GP (``gan_layers.gradient_penalty``), target domains drawn by shuffling the batch's own domain
vectors (the authors' multi-attribute mode) and n_critic = 5: phase "d" every step, "g" every 5th.
Defaults are the authors' (yunjey/stargan): G conv_dim 64 with 7x7 in/out convs, two 4x4 stride-2
down- and up-sampling convs, 6 residual blocks, affine instance norm (on the fused kernels), convs
without bias; D six 4x4 stride-2 convs with LeakyReLU(0.01); Adam(1e-4, 0.5, 0.999) for both, the
learning rates decaying linearly to 0 over the second half. The authors' instance norms also track
running statistics, which their test code never uses (it samples in training mode), so ours do not.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .gan_layers import (GANConfig, GANModel, LinearDecayAdam, ResnetBlock, d_loss, frozen, g_loss,
                         gradient_penalty, norm_layer)

Tensor = torch.Tensor


@dataclass
class StarGANConfig(GANConfig):
    grad_clip: Optional[float] = None   # the authors clip nothing
    data: str = "digits_domains"    # a multi-domain data set: "image" and "domain" ([N, c_dim] in {0, 1})
    in_channels: int = 3
    c_dim: int = 3                  # number of domain attributes
    g_conv_dim: int = 64
    d_conv_dim: int = 64
    g_repeat_num: int = 6           # residual blocks in G
    d_repeat_num: int = 6           # stride-2 convs in D; image_size / 2**d_repeat_num is D_src's map size
    lambda_cls: float = 1.0
    lambda_rec: float = 10.0
    lambda_gp: float = 10.0
    n_critic: int = 5
    lr: float = 1e-4
    decay_start: float = 0.5


class StarGenerator(nn.Module):
    """conv7 (x ++ tiled c) -> 2 x down(4x4, s2) -> g_repeat_num residual blocks -> 2 x up -> conv7, tanh."""

    def __init__(self, in_channels: int, c_dim: int, conv_dim: int = 64, repeat_num: int = 6):
        super().__init__()
        layers = [nn.Conv2d(in_channels + c_dim, conv_dim, 7, 1, 3, bias=False),
                  norm_layer("instance", conv_dim, affine=True), nn.ReLU()]
        c = conv_dim
        for _ in range(2):
            layers += [nn.Conv2d(c, 2 * c, 4, 2, 1, bias=False), norm_layer("instance", 2 * c, affine=True), nn.ReLU()]
            c *= 2
        layers += [ResnetBlock(c, "instance", "zeros", affine=True, bias=False) for _ in range(repeat_num)]
        for _ in range(2):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), norm_layer("instance", c // 2, affine=True),
                       nn.ReLU()]
            c //= 2
        layers += [nn.Conv2d(c, in_channels, 7, 1, 3, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        c = c.to(x.dtype)[:, :, None, None].expand(-1, -1, *x.shape[2:])
        return self.main(torch.cat([x, c], dim=1))


class StarDiscriminator(nn.Module):
    """repeat_num 4x4 stride-2 convs with LeakyReLU(0.01), then two heads: a 3x3 conv to one logit per
    patch (real / fake) and a conv over the whole remaining map to c_dim domain logits."""

    def __init__(self, in_channels: int, image_size: int, c_dim: int, conv_dim: int = 64, repeat_num: int = 6):
        super().__init__()
        layers, c = [nn.Conv2d(in_channels, conv_dim, 4, 2, 1), nn.LeakyReLU(0.01)], conv_dim
        for _ in range(1, repeat_num):
            layers += [nn.Conv2d(c, 2 * c, 4, 2, 1), nn.LeakyReLU(0.01)]
            c *= 2
        self.main = nn.Sequential(*layers)
        self.conv_src = nn.Conv2d(c, 1, 3, 1, 1, bias=False)
        self.conv_cls = nn.Conv2d(c, c_dim, image_size // 2 ** repeat_num, bias=False)

    def forward(self, x: Tensor):
        h = self.main(x)
        return self.conv_src(h), self.conv_cls(h).flatten(1)


def _cls_loss(logits: Tensor, target: Tensor) -> Tensor:
    """The authors' multi-attribute classification loss: BCE summed over attributes, averaged over the batch."""
    return F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / logits.shape[0]


class StarGAN(GANModel):
    name = "stargan"
    description = "StarGAN: one generator for every domain (target vector tiled), PatchGAN + domain-classifier D, WGAN-GP"
    Config = StarGANConfig
    presets = {
        "tiny": dict(image_size=16, g_conv_dim=8, d_conv_dim=8, g_repeat_num=1, d_repeat_num=3, n_critic=2,
                     batch_size=4, steps=20),
        "digits": dict(image_size=16, g_conv_dim=16, d_conv_dim=32, g_repeat_num=3, d_repeat_num=3,
                       batch_size=16, steps=1000),
        # the authors' CelebA defaults (128x128, 5 attributes, 200k iterations) on our 3-attribute digits
        "paper": dict(image_size=128, g_conv_dim=64, d_conv_dim=64, g_repeat_num=6, d_repeat_num=6,
                      batch_size=16, steps=200_000),
    }
    sample_options = {"--domain": dict(dest="domain", default=None,
                                       help="target attributes as 0/1 digits (digits_domains: thick, red, slanted)")}

    def __init__(self, config: StarGANConfig):
        super().__init__(config)
        c = config
        if c.image_size % 2 ** c.d_repeat_num or c.image_size % 4:
            raise ValueError(f"stargan: image_size {c.image_size} must be divisible by 4 and by 2**d_repeat_num "
                             f"= {2 ** c.d_repeat_num}")
        if c.n_critic < 1:
            raise ValueError(f"stargan: n_critic must be >= 1, got {c.n_critic}")
        self.generator = StarGenerator(c.in_channels, c.c_dim, c.g_conv_dim, c.g_repeat_num)
        self.discriminator = StarDiscriminator(c.in_channels, c.image_size, c.c_dim, c.d_conv_dim, c.d_repeat_num)

    def phases(self, step: int):
        return ("d", "g") if (step + 1) % self.config.n_critic == 0 else ("d",)

    def optimizers(self) -> Dict[str, torch.optim.Optimizer]:
        c = self.config
        betas = (c.beta1, c.beta2)
        return {"d": LinearDecayAdam(self.discriminator.parameters(), lr=c.lr_d or c.lr, betas=betas,
                                     total_steps=c.steps, decay_start=c.decay_start),
                "g": LinearDecayAdam(self.generator.parameters(), lr=c.lr, betas=betas,
                                     total_steps=max(1, c.steps // c.n_critic), decay_start=c.decay_start)}

    @staticmethod
    def target_domains(c_org: Tensor) -> Tensor:
        """Targets for a batch: its own domain vectors in a random order (global RNG)."""
        return c_org[torch.randperm(len(c_org), device=c_org.device)]

    def forward(self, batch: Dict[str, Tensor], phase: str = "d", step: int = 0):
        c = self.config
        x, c_org = batch["image"], batch["domain"]
        c_trg = self.target_domains(c_org)
        D = self.discriminator
        if phase == "d":
            src_real, cls_real = D(x)
            with torch.no_grad():
                fake = self.generator(x, c_trg)
            src_fake, _ = D(fake)
            adv = d_loss("wgan", src_real, src_fake)
            cls = _cls_loss(cls_real, c_org)                  # the classifier learns the real domains
            gp = gradient_penalty(lambda t: D(t)[0], x, fake)
            loss = adv + c.lambda_cls * cls + c.lambda_gp * gp
            return loss, {"d_loss": loss, "d_adv": adv, "d_cls": cls, "gp": gp}
        if phase == "g":
            fake = self.generator(x, c_trg)
            with frozen(D):
                src_fake, cls_fake = D(fake)
            adv = g_loss("wgan", src_fake)
            cls = _cls_loss(cls_fake, c_trg)                  # the generator aims at the target domains
            rec = F.l1_loss(self.generator(fake, c_org), x)
            loss = adv + c.lambda_rec * rec + c.lambda_cls * cls
            return loss, {"g_loss": loss, "g_adv": adv, "g_cls": cls, "rec": rec}
        raise ValueError(f"stargan: unknown phase {phase!r}; phases are 'd' and 'g'")

    # ------------------------------------------------------------------ inference
    def translate(self, x: Tensor, c: Tensor) -> Tensor:
        device = next(self.parameters()).device
        return torch.cat([self.generator(x[i: i + 256].to(device), c[i: i + 256].to(device)).cpu()
                          for i in range(0, len(x), 256)])

    def domains(self) -> Tensor:
        """Every domain vector, [2**c_dim, c_dim], in binary order."""
        k = self.config.c_dim
        return ((torch.arange(2 ** k)[:, None] >> torch.arange(k - 1, -1, -1)) & 1).float()

    @torch.no_grad()
    def preview(self, batch: Dict[str, Tensor], generator: torch.Generator) -> Tensor:
        """Each of up to 8 inputs followed by its translations to the 8 domains (72 images: the trainer's
        square grid is 9 wide, one input a row)."""
        x = batch["image"][:8].cpu()
        doms = self.domains()
        outs = [self.translate(x, d.expand(len(x), -1)) for d in doms]
        return torch.stack([x] + outs, 1).flatten(0, 1)

    @torch.no_grad()
    def generate(self, num: int, generator: torch.Generator, domain: Optional[str] = None, **options: Any) -> Tensor:
        """The first `num` held-out images translated to `domain` (a 0/1 string, one digit per attribute,
        e.g. "101"), or each to a random domain drawn from `generator`."""
        from .. import data
        c = self.config
        x = data.load(c.data, "test", c.image_size)["image"][:num]
        if domain is None:
            target = torch.randint(0, 2, (len(x), c.c_dim), generator=generator).float()
        else:
            if len(domain) != c.c_dim or set(domain) - {"0", "1"}:
                raise ValueError(f"stargan: `domain` must be {c.c_dim} characters of 0/1, got {domain!r}")
            target = torch.tensor([float(ch) for ch in domain]).expand(len(x), -1)
        return self.translate(x, target)

    @torch.no_grad()
    def evaluate(self, split: str = "test", num: int = 500, generator: Optional[torch.Generator] = None
                 ) -> Dict[str, Any]:
        """Domain accuracy of translations of `num` held-out images to random target domains, judged by
        an independent domain classifier trained on real training images (``domain_classifier``; its
        accuracy on real held-out images is the floor, chance 0.5 per attribute the ceiling) and by the
        model's own D_cls head; reconstruction error |G(G(x, c_trg), c_org) - x|; with digit labels, the
        content kept: the in-repo digits classifier's accuracy on the translations' stroke intensity (max
        over RGB), next to its accuracy on the real images (the floor)."""
        from .. import data, metrics
        c = self.config
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        d = data.load(c.data, split, c.image_size)
        x, c_org = d["image"][:num], d["domain"][:num]
        c_trg = torch.randint(0, 2, c_org.shape, generator=generator).float()
        fake = self.translate(x, c_trg)
        rec = self.translate(fake, c_org)
        judge = domain_classifier(c.data, c.image_size, c.c_dim)
        device = next(self.parameters()).device
        head = lambda t: torch.cat([self.discriminator(t[i: i + 256].to(device))[1].cpu()  # noqa: E731
                                    for i in range(0, len(t), 256)])
        out: Dict[str, Any] = {"num": len(x)}
        for name, clf in (("classifier", judge), ("d_cls", head)):
            acc_fake = _attribute_accuracy(clf(fake), c_trg)
            acc_real = _attribute_accuracy(clf(x), c_org)
            out[f"domain_accuracy_{name}"] = {"value": acc_fake["attribute"], "floor": acc_real["attribute"],
                                              "ceiling": 0.5}
            out[f"domain_exact_{name}"] = {"value": acc_fake["exact"], "floor": acc_real["exact"],
                                           "ceiling": 0.5 ** c.c_dim}
        out["rec_l1"] = {"value": float((rec - x).abs().mean()), "floor": 0.0}
        if "label" in d:
            labels = d["label"][:num]
            ink = lambda t: t.amax(1, keepdim=True)                       # noqa: E731
            out["digits_accuracy"] = {"value": metrics.digits_accuracy(ink(fake), labels),
                                      "floor": metrics.digits_accuracy(ink(x), labels), "ceiling": 0.1}
        return out


def _attribute_accuracy(logits: Tensor, target: Tensor) -> Dict[str, float]:
    right = (logits > 0).float() == target
    return {"attribute": float(right.float().mean()), "exact": float(right.all(1).float().mean())}


@functools.lru_cache(maxsize=4)
def domain_classifier(data_name: str, image_size: int, c_dim: int, epochs: int = 6):
    """A small CNN trained (fixed seed, seconds) to tell the domain attributes of real training images
    of `data_name`; returns logits for a batch. Independent of any GAN, so it can judge translations."""
    from .. import data
    d = data.load(data_name, "train", image_size)
    x, y = d["image"], d["domain"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(x.shape[1], 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                            nn.Linear(32 * (image_size // 4) ** 2, 64), nn.ReLU(), nn.Linear(64, c_dim))
        opt = torch.optim.Adam(net.parameters(), lr=2e-3)
        with torch.enable_grad():
            for _ in range(epochs):
                for idx in torch.randperm(len(x)).split(32):
                    loss = F.binary_cross_entropy_with_logits(net(x[idx]), y[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
    net.eval()
    return lambda t: torch.cat([net(t[i: i + 512].float()) for i in range(0, len(t), 512)]).detach()
