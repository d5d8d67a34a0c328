"""Latent diffusion (Rombach et al. 2022): DDPM training and DDIM sampling of a UNet in the latent space of
a KL autoencoder (vae.py, diffusers' AutoencoderKL layout) or a VQ-VAE (vqvae.py; the UNet then works on
the pre-quantisation latents and decoding quantises, as the paper's VQ-reg models), on latents scaled by
``scaling_factor``.

    m = genkernels.models.build("ldm", preset="digits")     # autoencoder trained first, then the UNet
    m = genkernels.models.build("ldm", preset="digits", autoencoder_checkpoint="runs/vae")  # a trained one

Training has two stages, as in the paper: the autoencoder (phase ``"ae"``, its own ELBO objective, for
``ae_steps`` steps; skipped when ``autoencoder_checkpoint`` names a trained ``vae`` run, which is then
frozen; ``vqvae`` runs with ``autoencoder="vqvae"``), then the UNet (phase ``"main"``) on ``z * scaling_factor`` with z ~ q(z | x) of the frozen
encoder (the VQ-VAE's z: its pre-quantisation latents). ``scaling_factor`` None measures it once, 1 / std of the first diffusion batch's latents (SD
1.x's fixed 0.18215 was measured the same way), and keeps it as a buffer (saved with the weights).
Sampling: DDIM (ddim.py) from N(0, I) latents, then ``decode(z / scaling_factor)``. The text-conditioned
version is Stable Diffusion (stable_diffusion.py).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from ..nn import DDPMScheduler
from .base import Model
from .ddim import DDIM, DDIMConfig
from .unet import UNet, UNetConfig
from .vae import VAE, VAEConfig
from .vqvae import VQVAE, VQVAEConfig

Tensor = torch.Tensor


@dataclass
class LDMConfig(DDIMConfig):
    image_size: int = 32                 # pixels; the UNet runs at image_size / 2^(len(ae_block_out_channels) - 1)
    # the first stage, "vae" (KL) or "vqvae" (its config fields): trained here first, or loaded from a checkpoint
    autoencoder: str = "vae"
    ae_block_out_channels: Tuple[int, ...] = (32, 64)
    ae_layers_per_block: int = 1
    latent_channels: int = 4
    ae_norm_num_groups: int = 8
    ae_kl_weight: float = 1e-3           # a small KL weight: a sharp autoencoder with a near-Gaussian posterior
    ae_num_vq_embeddings: int = 128      # codebook size of the VQ-VAE
    ae_lr: float = 1e-3
    ae_steps: int = 1000                 # steps of phase "ae" (ignored with autoencoder_checkpoint)
    autoencoder_checkpoint: Optional[str] = None
    scaling_factor: Optional[float] = None
    # the diffusion (SD's scaled_linear schedule); latents are not clipped to [-1, 1]
    beta_schedule: str = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012
    clip_sample: bool = False
    sample_steps: int = 50

    def __post_init__(self):
        super().__post_init__()
        if self.autoencoder not in ("vae", "vqvae"):
            raise ValueError(f"{type(self).__name__}: `autoencoder` must be 'vae' or 'vqvae', got {self.autoencoder!r}")
        self.ae_block_out_channels = tuple(self.ae_block_out_channels)
        f = 2 ** (len(self.ae_block_out_channels) - 1)
        if self.image_size % f:
            raise ValueError(f"{type(self).__name__}: `image_size`={self.image_size} must be divisible by the "
                             f"autoencoder's factor {f}")
        lat, levels = self.image_size // f, 2 ** (len(self.block_out_channels) - 1)
        if lat % levels:
            raise ValueError(f"{type(self).__name__}: the latent size {lat} must be divisible by 2^(UNet levels - 1) "
                             f"= {levels}")
        if self.scaling_factor is not None and self.scaling_factor <= 0:
            raise ValueError(f"{type(self).__name__}: `scaling_factor` must be > 0 or None, got {self.scaling_factor}")

    def autoencoder_config(self):
        common = dict(data=self.data, image_size=self.image_size, in_channels=self.in_channels,
                      block_out_channels=self.ae_block_out_channels, layers_per_block=self.ae_layers_per_block,
                      latent_channels=self.latent_channels, norm_num_groups=self.ae_norm_num_groups, lr=self.ae_lr)
        if self.autoencoder == "vqvae":
            return VQVAEConfig(**common, num_vq_embeddings=self.ae_num_vq_embeddings)
        return VAEConfig(**common, kl_weight=self.ae_kl_weight)


TINY = dict(image_size=8, ae_block_out_channels=(8, 8), latent_channels=2, ae_norm_num_groups=4, ae_steps=2,
            block_out_channels=(8, 16), attention_levels=(False, True), attention_heads=2, norm_num_groups=4,
            num_train_timesteps=100, sample_steps=4, batch_size=8, steps=20)
# the digits at their native 8x8 (sized for a shared 2-core CPU): a 2x KL autoencoder to 4x4x4 latents
DIGITS = dict(image_size=8, ae_block_out_channels=(16, 32), latent_channels=4, ae_steps=300,
              block_out_channels=(32, 64), attention_levels=(False, True), attention_heads=2, batch_size=32,
              steps=2000, sample_steps=25)


class LDM(DDIM):
    name = "ldm"
    description = "Latent diffusion: DDPM-trained UNet in a KL autoencoder's scaled latent space, DDIM sampling"
    Config = LDMConfig
    presets = {"tiny": TINY, "digits": DIGITS, "digits_vq": dict(DIGITS, autoencoder="vqvae"),
               "photos": dict(DIGITS, data="photos", in_channels=3, image_size=32, ae_steps=3000, steps=8000)}

    def __init__(self, config: LDMConfig, *, unet: Optional[UNet] = None, vae: Optional[Model] = None,
                 scheduler_config: Optional[Dict[str, Any]] = None):
        Model.__init__(self, config)
        c = config
        kind = VQVAE if c.autoencoder == "vqvae" else VAE
        if vae is None and c.autoencoder_checkpoint is not None:
            from . import load
            vae = load(c.autoencoder_checkpoint)
            if not isinstance(vae, kind):
                raise ValueError(f"{self.name}: `autoencoder_checkpoint` must be a trained {kind.name!r} run, "
                                 f"got {vae.name!r}")
        self.pretrained_ae = vae is not None
        # the first stage (KL VAE or VQ-VAE), named `vae` as in diffusers' pipelines
        self.vae = vae if vae is not None else kind(c.autoencoder_config())
        self.vae.requires_grad_(not self.pretrained_ae)
        self.unet = unet if unet is not None else UNet(self.unet_config())
        self.noise_schedule = DDPMScheduler(**self.schedule_kwargs())
        # sampling scheduler: ours (schedule_kwargs) or a diffusers pipeline's config (from_diffusers)
        self.scheduler_config = scheduler_config
        sf = c.scaling_factor if c.scaling_factor is not None else 0.0   # 0: measured on the first batch
        self.register_buffer("latent_scale", torch.tensor(float(sf)))
        self.register_buffer("latent_shift", torch.tensor(float(getattr(self.vae.config, "shift_factor", None) or 0.0)))

    # ------------------------------------------------------------------ geometry
    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def unet_config(self) -> UNetConfig:
        c = self.config
        size = c.image_size // 2 ** (len(c.ae_block_out_channels) - 1)
        return dataclasses.replace(super().unet_config(), sample_size=size, in_channels=c.latent_channels,
                                   out_channels=c.latent_channels)

    # ------------------------------------------------------------------ latents
    def to_latents(self, x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """Scaled latents of images: (z - shift) * scale, z ~ q(z | x)."""
        z = self.vae.encode(x)
        z = z if isinstance(self.vae, VQVAE) else z.sample(generator)
        if float(self.latent_scale) == 0.0:   # first diffusion batch: unit-variance latents from now on
            self.latent_scale.fill_(1.0 / (z - self.latent_shift).float().std().clamp_min(1e-6).item())
        return (z - self.latent_shift) * self.latent_scale

    def from_latents(self, z: Tensor) -> Tensor:
        """Images in [-1, 1] of scaled latents (scale 1 while it has not been measured)."""
        scale = torch.where(self.latent_scale > 0, self.latent_scale, torch.ones_like(self.latent_scale))
        return self.vae.decode(z / scale + self.latent_shift).clamp(-1, 1)

    # ------------------------------------------------------------------ training
    def phases(self, step: int) -> Sequence[str]:
        return ("ae",) if not self.pretrained_ae and step < self.config.ae_steps else ("main",)

    def optimizers(self) -> Dict[str, torch.optim.Optimizer]:
        opt = {"main": torch.optim.Adam(self.diffusion_parameters(), lr=self.config.lr)}
        if not self.pretrained_ae:
            opt["ae"] = torch.optim.Adam(self.vae.parameters(), lr=self.config.ae_lr)
        return opt

    def diffusion_parameters(self) -> List[torch.nn.Parameter]:
        return list(self.unet.parameters())

    def forward(self, batch: Dict[str, Tensor], phase: str = "main", step: int = 0):
        if phase == "ae":
            return self.vae(batch, "main", step)
        with torch.no_grad():
            z = self.to_latents(batch["image"])
        loss, logs = super().forward({**batch, "image": z}, phase, step)   # DDPM's objective on latents
        return loss, {**logs, "latent_scale": self.latent_scale.detach()}

    # ------------------------------------------------------------------ sampling
    def latent_shape(self, height: Optional[int] = None, width: Optional[int] = None) -> Tuple[int, int, int]:
        """[C, h, w] of the latents of height x width images (the config's size by default)."""
        f = self.vae_scale_factor
        height = self.config.image_size if height is None else int(height)
        width = self.config.image_size if width is None else int(width)
        if height <= 0 or width <= 0 or height % f or width % f:
            raise ValueError(f"{self.name}: image height and width must be positive multiples of the VAE factor "
                             f"{f}, got {height} x {width}")
        vc = self.vae.config
        return getattr(vc, "vq_embed_dim", None) or vc.latent_channels, height // f, width // f

    def sampler(self, steps: Optional[int] = None, **options: Any):
        if self.scheduler_config is None:
            return super().sampler(steps, **options)
        from ..nn import DDIMScheduler
        sched = DDIMScheduler.from_config(self.scheduler_config)
        sched.set_timesteps(steps or self.config.sample_steps)
        return sched

    @torch.no_grad()
    def sample(self, num: int, generator: torch.Generator, steps: Optional[int] = None,
               latents: Optional[Tensor] = None, height: Optional[int] = None, width: Optional[int] = None,
               output_latents: bool = False, **options: Any) -> Tensor:
        """num images in [-1, 1] (or the final latents): DDIM from N(0, I) latents (or `latents`)."""
        dev = next(self.unet.parameters()).device
        dtype = next(self.unet.parameters()).dtype
        if latents is None:
            latents = torch.randn((num, *self.latent_shape(height, width)), generator=generator,
                                  device=generator.device)
        x = latents.to(device=dev, dtype=dtype)
        sched = self.sampler(steps, **options)
        x = x * sched.init_noise_sigma
        for t in sched.timesteps:
            x = self.denoise(sched, x, t, generator, **options)
        return x if output_latents else self.from_latents(x)
