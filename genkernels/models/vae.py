"""VAE (Kingma & Welling, 2014) in the layout of latent diffusion's KL autoencoder (diffusers' AutoencoderKL).

    m = genkernels.models.build("vae", preset="digits")
    posterior = m.encode(x)              # DiagonalGaussian over [N, latent_channels, H/f, W/f]
    x_hat = m.decode(posterior.sample(generator))
    x_new = m.generate(16, generator)    # decode(z), z ~ N(0, I)
    vae = genkernels.models.load_diffusers_vae(autoencoder_kl)   # same encode / decode as diffusers

Network: encoder -> quant_conv (1x1, mean and log-variance) -> z = mean + std * eps (the
reparameterisation) -> post_quant_conv (1x1) -> decoder; the parameter names are AutoencoderKL's, so its
state dicts load as they are. ``scaling_factor`` (and ``shift_factor``) are carried for latent diffusion,
which trains on ``(z - shift_factor) * scaling_factor``; ``encode`` / ``decode`` work on raw z, as in
diffusers.

Objective, per image: the decoder is a Gaussian ``p(x | z) = N(x; decode(z), recon_std^2 I)``, the
prior ``N(0, I)``, so with D pixel values

    nll = 0.5 * |x - decode(z)|^2 / recon_std^2 + D * log(recon_std * sqrt(2 pi))
    kl  = KL(q(z | x) || N(0, I)) = 0.5 * sum(mean^2 + var - 1 - logvar)
    ELBO = -(nll + kl)                  (nats per image, a lower bound on log p(x); reported)
    loss = (nll + kl_weight * kl) / D   (kl_weight = 1: the negative ELBO per pixel value)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
from torch import nn

from .. import metrics
from .autoencoder import Autoencoder, AutoencoderConfig, diffusers_fields, diffusers_source, diffusers_state_dict

Tensor = torch.Tensor


class DiagonalGaussian:
    """q(z | x) = N(mean, diag(exp(logvar))) from `parameters` [N, 2L, ...] = [mean; logvar] on dim 1
    (log-variance clamped to [-30, 20], as diffusers' DiagonalGaussianDistribution)."""

    def __init__(self, parameters: Tensor):
        self.parameters = parameters
        self.mean, logvar = parameters.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    def sample(self, generator: Optional[torch.Generator] = None) -> Tensor:
        """mean + std * eps (eps from `generator`, or torch's global RNG in training)."""
        eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * eps

    def mode(self) -> Tensor:
        return self.mean

    def kl(self) -> Tensor:
        """KL(q || N(0, I)) per image [N]."""
        return 0.5 * (self.mean.square() + self.var - 1.0 - self.logvar).flatten(1).sum(1)

    def nll(self, sample: Tensor) -> Tensor:
        """-log q(sample) per image [N]."""
        return 0.5 * (math.log(2 * math.pi) + self.logvar + (sample - self.mean).square() / self.var).flatten(1).sum(1)


@dataclass
class VAEConfig(AutoencoderConfig):
    latent_channels: int = 2
    kl_weight: float = 1.0
    recon_std: float = 0.1               # std of the Gaussian decoder p(x | z), in [-1, 1] pixel units
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    scaling_factor: float = 1.0          # latent diffusion trains on (z - shift_factor) * scaling_factor
    shift_factor: Optional[float] = None


# Stable Diffusion's KL-f8 autoencoder (diffusers' AutoencoderKL config of SD 1.x / 2.x)
_SD_VAE = dict(data="photos", image_size=256, in_channels=3, block_out_channels=(128, 256, 512, 512),
               layers_per_block=2, latent_channels=4, norm_num_groups=32, scaling_factor=0.18215, batch_size=4,
               kl_weight=1e-6)


class VAE(Autoencoder):
    name = "vae"
    description = "VAE / KL autoencoder of latent diffusion (diffusers AutoencoderKL layout), ELBO, prior samples"
    Config = VAEConfig
    presets = {
        "tiny": dict(Autoencoder.presets["tiny"]),
        "digits": dict(Autoencoder.presets["digits"]),
        "photos": dict(Autoencoder.presets["photos"]),
        "sd": _SD_VAE,
    }
    encoder_out_channels_factor = 2

    def __init__(self, config: VAEConfig):
        super().__init__(config)
        L = config.latent_channels
        if config.recon_std <= 0:
            raise ValueError(f"vae: `recon_std` must be > 0, got {config.recon_std}")
        if config.kl_weight < 0:
            raise ValueError(f"vae: `kl_weight` must be >= 0, got {config.kl_weight}")
        self.quant_conv = nn.Conv2d(2 * L, 2 * L, 1) if config.use_quant_conv else None
        self.post_quant_conv = nn.Conv2d(L, L, 1) if config.use_post_quant_conv else None

    # ------------------------------------------------------------------ the networks
    def encode(self, x: Tensor) -> DiagonalGaussian:
        h = self.encoder(x)
        return DiagonalGaussian(self.quant_conv(h) if self.quant_conv is not None else h)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(self.post_quant_conv(z) if self.post_quant_conv is not None else z)

    def reconstruct(self, x: Tensor) -> Tensor:
        """decode(posterior mean): the deterministic reconstruction."""
        return self.decode(self.encode(x).mode())

    # ------------------------------------------------------------------ objective
    def terms(self, x: Tensor, generator: Optional[torch.Generator] = None) -> Dict[str, Tensor]:
        """Per-image nll, kl and elbo (nats) of one reparameterised sample z ~ q(z | x), and x_hat."""
        posterior = self.encode(x)
        x_hat = self.decode(posterior.sample(generator))
        D = x[0].numel()
        s = self.config.recon_std
        nll = 0.5 * (x - x_hat).square().flatten(1).sum(1) / s ** 2 + D * math.log(s * math.sqrt(2 * math.pi))
        kl = posterior.kl()
        return {"nll": nll, "kl": kl, "elbo": -(nll + kl), "x_hat": x_hat}

    def forward(self, batch: Dict[str, Tensor], phase: str = "main", step: int = 0
                ) -> Tuple[Tensor, Dict[str, Tensor]]:
        x = batch["image"]
        t = self.terms(x)
        D = x[0].numel()
        loss = (t["nll"] + self.config.kl_weight * t["kl"]).mean() / D
        mse = (x - t["x_hat"]).square().mean()
        return loss, {"mse": mse, "kl": t["kl"].mean(), "elbo": t["elbo"].mean()}

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def sample_prior(self, num: int, generator: torch.Generator) -> Tensor:
        z = torch.randn((num, *self.latent_shape), generator=generator, device=generator.device)
        return self.decode(z.to(self._device())).clamp(-1, 1)

    @torch.no_grad()
    def preview(self, batch: Dict[str, Tensor], generator: torch.Generator) -> Tensor:
        """8 inputs, their reconstructions, then 8 samples from the prior."""
        return torch.cat([super().preview(batch, generator), self.sample_prior(8, generator)])

    @torch.no_grad()
    def generate(self, num: int, generator: torch.Generator, **options: Any) -> Tensor:
        """`num` samples decoded from z ~ N(0, I)."""
        return self._batched(lambda z: self.decode(z).clamp(-1, 1),
                             torch.randn((num, *self.latent_shape), generator=generator,
                                         device=generator.device).to(self._device()))

    def _evaluate_more(self, x: Tensor, generator: Optional[torch.Generator]) -> Dict[str, Any]:
        """ELBO on the held-out images (one posterior sample each) and FD-digits / KID of prior samples."""
        g = generator if generator is not None else torch.Generator(device=self._device()).manual_seed(0)
        parts = [self.terms(chunk, g) for chunk in x.split(128)]
        elbo = torch.cat([p["elbo"] for p in parts])
        D = x[0].numel()
        out = {"elbo_nats": float(elbo.mean()),
               "elbo_bits_per_dim": float(-elbo.mean() / (D * math.log(2))),
               "kl_nats": float(torch.cat([p["kl"] for p in parts]).mean()),
               "recon_std": self.config.recon_std}
        if self.config.data == "digits":
            samples = self.generate(len(x), g)
            n = len(x)
            out["fd_digits_samples"] = self._bounds("fd_digits", metrics.fd_digits(samples, x), n)
            out["kid_samples"] = self._bounds("kid", metrics.kid(samples, x, subset_size=min(200, n)), n)
        return out


# ---------------------------------------------------------------------- diffusers AutoencoderKL
def vae_config_from_diffusers(cfg: Mapping[str, Any], **overrides: Any) -> VAEConfig:
    """Our VAEConfig for a diffusers AutoencoderKL config (its ``.config`` or the dict of config.json)."""
    for k in ("latents_mean", "latents_std"):
        if cfg.get(k) is not None:
            raise ValueError(f"load_diffusers_vae: AutoencoderKL configs with {k} are not supported")
    fields = diffusers_fields(cfg, "load_diffusers_vae", latent_channels=4)
    fields.update(scaling_factor=float(cfg.get("scaling_factor") or 0.18215), shift_factor=cfg.get("shift_factor"),
                  use_quant_conv=bool(cfg.get("use_quant_conv", True)),
                  use_post_quant_conv=bool(cfg.get("use_post_quant_conv", True)))
    fields.update(overrides)
    return VAEConfig(**fields)


def load_diffusers_vae(m: Any, config: Optional[Mapping[str, Any]] = None, **overrides: Any) -> VAE:
    """Our VAE with the weights of a diffusers ``AutoencoderKL`` (an instance, or its state dict plus its
    config dict): the same encode / decode. `overrides`: other VAEConfig fields (e.g. kl_weight)."""
    state, cfg = diffusers_source(m, config, "load_diffusers_vae")
    ours = VAE(vae_config_from_diffusers(cfg, **overrides))
    ours.load_state_dict(diffusers_state_dict(state), strict=True)
    return ours
