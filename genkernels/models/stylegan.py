"""StyleGAN (Karras et al. 2019): a mapping network z -> w (8-layer MLP, pixel norm, learning-rate
multiplier 0.01) and a synthesis network from a learned constant, with per-layer noise (learned
per-channel scales) and AdaIN of w after every convolution through the fused ``genkernels.adain`` op.
Training: non-saturating loss, style mixing regularisation, a tracked average w for the truncation
trick, generator EMA, and StyleGAN2's lazy regularisers: R1 on the critic every ``r1_interval`` steps
and path-length regularisation every ``pl_interval`` steps (its gradient of a gradient runs through
adain's double backward). The critic is ProGAN's at a fixed resolution.

    model = genkernels.models.build("stylegan", "digits")
    images = model.generate(16, torch.Generator().manual_seed(0), truncation=0.7)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from .gan_layers import (EqualConv2d, EqualLinear, GANConfig, GANModel, GrowingDiscriminator, StyleLayer,
                         d_loss, frozen, g_loss, lrelu, pixel_norm, r1_penalty, sample_metrics)

Tensor = torch.Tensor


@dataclass
class StyleGANConfig(GANConfig):
    image_size: int = 16
    z_dim: int = 64
    w_dim: int = 64
    mapping_layers: int = 8
    mapping_lr_mul: float = 0.01
    channels: Tuple[int, ...] = (64, 32, 16)      # synthesis and critic channels per resolution 4, 8, ..., image_size
    style_mixing_prob: float = 0.9
    truncation_psi: float = 0.7                   # default of generate(); 1 = no truncation
    w_avg_beta: float = 0.995                     # tracking of the average w
    r1_gamma: float = 10.0
    r1_interval: int = 16
    pl_weight: float = 2.0
    pl_interval: int = 4
    pl_decay: float = 0.01
    pl_batch_shrink: int = 2
    mbstd_group: int = 4
    lr: float = 2e-3
    beta1: float = 0.0
    beta2: float = 0.99
    ema_decay: Optional[float] = 0.999
    grad_clip: Optional[float] = None


class MappingNetwork(nn.Module):
    def __init__(self, c: StyleGANConfig):
        super().__init__()
        dims = [c.z_dim] + [c.w_dim] * c.mapping_layers
        self.layers = nn.ModuleList(EqualLinear(a, b, lr_mul=c.mapping_lr_mul) for a, b in zip(dims, dims[1:]))

    def forward(self, z: Tensor) -> Tensor:
        x = pixel_norm(z)
        for layer in self.layers:
            x = lrelu(layer(x))
        return x


class SynthesisNetwork(nn.Module):
    """Learned 4x4 constant, two StyleLayers per resolution (the first of each doubling upsamples), to-RGB."""

    def __init__(self, c: StyleGANConfig):
        super().__init__()
        ch = c.channels
        self.const = nn.Parameter(torch.ones(1, ch[0], 4, 4))
        layers = [StyleLayer(ch[0], ch[0], c.w_dim, 4, conv=False), StyleLayer(ch[0], ch[0], c.w_dim, 4)]
        for i, (a, b) in enumerate(zip(ch, ch[1:]), start=1):
            res = 4 * 2 ** i
            layers += [StyleLayer(a, b, c.w_dim, res, upsample=True), StyleLayer(b, b, c.w_dim, res)]
        self.layers = nn.ModuleList(layers)
        self.to_rgb = EqualConv2d(ch[-1], c.in_channels, 1, gain=1.0)

    @property
    def num_ws(self) -> int:
        return len(self.layers)

    def forward(self, ws: Tensor, noise: str = "random", generator: Optional[torch.Generator] = None) -> Tensor:
        """ws: [N, num_ws, w_dim], one style per layer."""
        x = self.const.expand(len(ws), -1, -1, -1)
        for i, layer in enumerate(self.layers):
            x = layer(x, ws[:, i], noise, generator)
        return self.to_rgb(x)


class Generator(nn.Module):
    """Mapping + synthesis + the tracked average w (one module, so the EMA copy has all three)."""

    def __init__(self, c: StyleGANConfig):
        super().__init__()
        self.mapping = MappingNetwork(c)
        self.synthesis = SynthesisNetwork(c)
        self.register_buffer("w_avg", torch.zeros(c.w_dim))

    def ws(self, z: Tensor, psi: float = 1.0) -> Tensor:
        """[N, num_ws, w_dim]: w of each z for every layer, truncated towards w_avg by psi."""
        w = self.mapping(z)
        if psi != 1:
            w = torch.lerp(self.w_avg, w, psi)
        return w[:, None].expand(-1, self.synthesis.num_ws, -1)

    def forward(self, z: Tensor, psi: float = 1.0, noise: str = "random",
                generator: Optional[torch.Generator] = None) -> Tensor:
        return self.synthesis(self.ws(z, psi), noise, generator)


class StyleGAN(GANModel):
    name = "stylegan"
    description = "StyleGAN: mapping network, AdaIN styles on the adain op, noise, mixing, truncation, R1 + PL"
    Config = StyleGANConfig
    sample_options = {
        "--truncation": dict(dest="truncation", type=float, default=None,
                             help="truncation psi (0: the average w; 1: none); default: the config's"),
        "--noise": dict(dest="noise", choices=("random", "const", "none"), default="random",
                        help="per-layer noise inputs"),
    }
    presets: Dict[str, Dict[str, Any]] = {
        "tiny": dict(image_size=8, z_dim=16, w_dim=16, mapping_layers=2, channels=(16, 8), batch_size=4,
                     r1_interval=2, pl_interval=2, steps=4),
        "digits": dict(image_size=16, z_dim=64, w_dim=64, mapping_layers=8, channels=(64, 32, 16),
                       batch_size=32, steps=1500, ema_decay=0.99),   # 0.999 would still hold the init here
        # the paper's FFHQ 1024x1024 networks
        "paper": dict(data="photos", in_channels=3, image_size=1024, z_dim=512, w_dim=512, mapping_layers=8,
                      channels=(512, 512, 512, 512, 256, 128, 64, 32, 16), batch_size=32, steps=780000),
    }

    def __init__(self, config: StyleGANConfig):
        super().__init__(config)
        if not config.channels or 4 * 2 ** (len(config.channels) - 1) != config.image_size:
            raise ValueError(f"`channels` needs one entry per resolution 4, 8, ..., image_size={config.image_size}; "
                             f"got {config.channels}")
        for name in ("r1_interval", "pl_interval", "pl_batch_shrink"):
            if getattr(config, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(config, name)}")
        self.generator = Generator(config)
        self.discriminator = GrowingDiscriminator(config.channels, config.in_channels, config.mbstd_group)
        # path-length target: the running mean of the lengths of earlier regularisation steps; this
        # step's lengths enter it at the next one (so a step's loss does not depend on how often it is
        # evaluated, and resume carries the three buffers)
        self.register_buffer("pl_mean", torch.zeros(()))
        self.register_buffer("pl_mean_next", torch.zeros(()))
        self.register_buffer("pl_step", torch.tensor(-1, dtype=torch.int64))

    def optimizers(self) -> Dict[str, torch.optim.Optimizer]:
        """Adam per network with StyleGAN2's lazy-regularisation correction: a regulariser applied every
        k steps makes the effective step count k / (k + 1) of the steps taken, so lr and betas are
        scaled by that ratio."""
        c = self.config
        opts = {}
        for phase, net, k in (("d", self.discriminator, c.r1_interval), ("g", self.generator, c.pl_interval)):
            ratio = k / (k + 1)
            lr = (c.lr_d or c.lr) if phase == "d" else c.lr
            opts[phase] = torch.optim.Adam(net.parameters(), lr=lr * ratio,
                                           betas=(c.beta1 ** ratio, c.beta2 ** ratio))
        return opts

    def mixed_ws(self, n: int) -> Tensor:
        """Training styles with mixing regularisation: with probability style_mixing_prob, the layers from
        a random crossover point on take the w of a second z."""
        G, c = self.generator, self.config
        ws = G.ws(self.randn(n, c.z_dim))
        if c.style_mixing_prob > 0 and torch.rand(()) < c.style_mixing_prob:
            cut = int(torch.randint(1, G.synthesis.num_ws, ()))
            ws = torch.cat([ws[:, :cut], G.ws(self.randn(n, c.z_dim))[:, cut:]], dim=1)
        return ws

    def path_length_penalty(self, n: int, step: int = 0) -> Tuple[Tensor, Tensor]:
        """StyleGAN2's path-length regulariser: E[(|J_w^T y| - a)^2] with y ~ N(0, I) / sqrt(H W) on the
        image and a the running mean (decay pl_decay) of the lengths at earlier steps. Returns (penalty,
        mean length)."""
        if step != int(self.pl_step):
            self.pl_mean.copy_(self.pl_mean_next)
            self.pl_step.fill_(step)
        ws = self.generator.ws(self.randn(n, self.config.z_dim))
        img = self.generator.synthesis(ws)
        y = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
        (grad,) = torch.autograd.grad((img * y).sum(), ws, create_graph=True)
        lengths = grad.pow(2).sum(2).mean(1).sqrt()
        self.pl_mean_next.copy_(torch.lerp(self.pl_mean, lengths.mean().detach(), self.config.pl_decay))
        return (lengths - self.pl_mean).pow(2).mean(), lengths.mean()

    def forward(self, batch: Dict[str, Tensor], phase: str = "d", step: int = 0) -> Tuple[Tensor, Dict[str, Tensor]]:
        c, G, D = self.config, self.generator, self.discriminator
        real = batch["image"]
        if phase == "d":
            with torch.no_grad():
                fake = G.synthesis(self.mixed_ws(len(real)))
            real_logits, fake_logits = D(real), D(fake)
            loss = d_loss("nonsaturating", real_logits, fake_logits)
            logs = {"d_loss": loss, "d_real": real_logits.mean(), "d_fake": fake_logits.mean()}
            if c.r1_gamma > 0 and step % c.r1_interval == 0:
                r1 = r1_penalty(D, real)
                loss = loss + c.r1_gamma / 2 * r1 * c.r1_interval
                logs["r1"] = r1
            return loss, logs
        if phase == "g":
            ws = self.mixed_ws(len(real))
            with frozen(D):
                loss = g_loss("nonsaturating", D(G.synthesis(ws)))
            logs = {"g_loss": loss}
            with torch.no_grad():
                G.w_avg.lerp_(ws[:, 0].mean(0), 1 - c.w_avg_beta)
            if c.pl_weight > 0 and step % c.pl_interval == 0:
                pl, length = self.path_length_penalty(max(1, len(real) // c.pl_batch_shrink), step)
                loss = loss + c.pl_weight * pl * c.pl_interval
                logs.update(pl=pl, pl_length=length)
            return loss, logs
        raise ValueError(f"`phase` must be 'd' or 'g', got {phase!r}")

    @torch.no_grad()
    def generate(self, num: int, generator: torch.Generator, truncation: Optional[float] = None,
                 noise: str = "random", **options: Any) -> Tensor:
        psi = self.config.truncation_psi if truncation is None else float(truncation)
        if not 0 <= psi <= 1:
            raise ValueError(f"`truncation` must be in [0, 1], got {psi}")
        z = self.randn(num, self.config.z_dim, generator=generator)
        return self.generator(z, psi, noise, generator).clamp(-1, 1)

    @torch.no_grad()
    def evaluate(self, split: str = "test", num: int = 500, generator: Optional[torch.Generator] = None
                 ) -> Dict[str, Any]:
        """FD-digits / KID without truncation (psi = 1), the usual way to report them."""
        return sample_metrics(self, self.generate, split, num, generator, truncation=1.0)
