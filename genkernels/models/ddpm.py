"""DDPM (Ho et al. 2020): a UNet learns to undo Gaussian noising; ancestral sampling walks back from noise.

Training: x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps at a uniform random t, and the UNet regresses the
``prediction_type`` target: ``epsilon`` (the noise), ``sample`` (x_0) or ``v_prediction``
(sqrt(a_t) eps - sqrt(1 - a_t) x_0). Beta schedules: ``linear``, ``scaled_linear``, ``cosine``
(squaredcos_cap_v2). The trainer keeps an EMA copy of the UNet, used for sampling.

Sampling: ``genkernels.nn.DDPMScheduler`` (diffusers' numbers), whose step is the fused ``ddpm_step``;
``sample_steps`` < num_train_timesteps strides the chain as diffusers' DDPMScheduler.set_timesteps does.
The sampling loop (``sample`` / ``denoise``) is what DDIM (ddim.py) and classifier-free guidance
(cfg.py) specialise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from .. import data, metrics
from ..nn import DDPMScheduler
from .base import Config, Model
from .unet import UNet, UNetConfig

Tensor = torch.Tensor


@dataclass
class DDPMConfig(Config):
    image_size: int = 8
    # the UNet: channels per level, self-attention (transformer blocks) at the levels marked True
    block_out_channels: Tuple[int, ...] = (32, 64)
    attention_levels: Tuple[bool, ...] = (False, True)
    attention_heads: int = 4
    layers_per_block: int = 1
    norm_num_groups: int = 8
    resnet_time_scale_shift: str = "scale_shift"    # AdaGN: the time embedding as the fused norm's scale/shift
    dropout: float = 0.0
    # the diffusion
    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"                   # linear | scaled_linear | cosine
    beta_start: float = 1e-4
    beta_end: float = 0.02
    prediction_type: str = "epsilon"                # epsilon | sample | v_prediction
    clip_sample: bool = True                        # clip the predicted x_0 to [-1, 1] while sampling
    sample_steps: int = 100                         # denoising steps of generate() / preview()
    lr: float = 1e-3
    ema_decay: Optional[float] = 0.995

    def __post_init__(self):
        self.block_out_channels = tuple(self.block_out_channels)
        self.attention_levels = tuple(bool(a) for a in self.attention_levels)
        if len(self.attention_levels) != len(self.block_out_channels):
            raise ValueError(f"{type(self).__name__}: `attention_levels` needs one flag per level of "
                             f"`block_out_channels` ({len(self.block_out_channels)}), got {self.attention_levels}")
        if self.prediction_type not in ("epsilon", "sample", "v_prediction"):
            raise ValueError(f"{type(self).__name__}: `prediction_type` must be 'epsilon', 'sample' or "
                             f"'v_prediction', got {self.prediction_type!r}")
        if self.image_size % 2 ** (len(self.block_out_channels) - 1):
            raise ValueError(f"{type(self).__name__}: `image_size`={self.image_size} must be divisible by "
                             f"2^(levels - 1) = {2 ** (len(self.block_out_channels) - 1)}")
        if self.sample_steps < 1 or self.sample_steps > self.num_train_timesteps:
            raise ValueError(f"{type(self).__name__}: `sample_steps` must be in [1, num_train_timesteps], "
                             f"got {self.sample_steps}")


TINY = dict(image_size=8, block_out_channels=(8, 16), attention_levels=(False, True), attention_heads=2,
            norm_num_groups=4, num_train_timesteps=100, sample_steps=4, batch_size=8, steps=20)
# sklearn's digits are 8x8 originals: the native resolution keeps the preset trainable in minutes on a CPU
DIGITS = dict(image_size=8, block_out_channels=(32, 64), attention_levels=(False, True), batch_size=32,
              steps=1000)


class DDPM(Model):
    name = "ddpm"
    description = "DDPM: UNet noise prediction (epsilon / x0 / v), ancestral sampling on the fused ddpm_step"
    Config = DDPMConfig
    presets = {"tiny": TINY, "digits": DIGITS,
               "digits_cosine_v": dict(DIGITS, beta_schedule="cosine", prediction_type="v_prediction")}
    sample_options = {"--steps": dict(dest="steps", type=int, help="denoising steps (default: the config's)")}

    def __init__(self, config: DDPMConfig):
        super().__init__(config)
        self.unet = UNet(self.unet_config())
        # the training schedule: add_noise / get_velocity with diffusers' alphas
        self.noise_schedule = DDPMScheduler(**self.schedule_kwargs())

    # ------------------------------------------------------------------ pieces subclasses change
    def num_class_embeds(self) -> Optional[int]:
        return None

    def unet_config(self) -> UNetConfig:
        c = self.config
        down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in c.attention_levels)
        up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(c.attention_levels))
        return UNetConfig(
            sample_size=c.image_size, in_channels=c.in_channels, out_channels=c.in_channels,
            block_out_channels=c.block_out_channels, down_block_types=down, up_block_types=up,
            mid_block_type="UNetMidBlock2DCrossAttn" if c.attention_levels[-1] else "UNetMidBlock2D",
            layers_per_block=c.layers_per_block, norm_num_groups=c.norm_num_groups, attention_head_dim=c.attention_heads,
            cross_attention_dim=None, num_class_embeds=self.num_class_embeds(),
            resnet_time_scale_shift=c.resnet_time_scale_shift, dropout=c.dropout)

    def schedule_kwargs(self) -> Dict[str, Any]:
        c = self.config
        return dict(num_train_timesteps=c.num_train_timesteps, beta_schedule=c.beta_schedule,
                    beta_start=c.beta_start, beta_end=c.beta_end, prediction_type=c.prediction_type,
                    clip_sample=c.clip_sample)

    def train_labels(self, batch: Dict[str, Tensor]) -> Optional[Tensor]:
        """The class labels the UNet sees in training (None: unconditional)."""
        return None

    def condition(self, batch: Dict[str, Tensor]) -> Dict[str, Any]:
        """The UNet's conditioning keywords in training (text embeddings in stable_diffusion.py)."""
        return {"class_labels": self.train_labels(batch)}

    # ------------------------------------------------------------------ training
    def ema_modules(self):
        return ["unet"]

    def forward(self, batch: Dict[str, Tensor], phase: str = "main", step: int = 0):
        x0 = batch["image"]
        noise = torch.randn_like(x0)
        t = torch.randint(0, self.config.num_train_timesteps, (x0.shape[0],), device=x0.device)
        xt = self.noise_schedule.add_noise(x0, noise, t)
        pt = self.config.prediction_type
        target = (noise if pt == "epsilon" else x0 if pt == "sample"
                  else self.noise_schedule.get_velocity(x0, noise, t))
        loss = F.mse_loss(self.unet(xt, t, **self.condition(batch)), target)
        return loss, {"mse": loss}

    # ------------------------------------------------------------------ sampling
    def sampler(self, steps: Optional[int] = None, **options: Any):
        """The scheduler of generate(), its timesteps set."""
        sched = DDPMScheduler(**self.schedule_kwargs())
        sched.set_timesteps(steps or self.config.sample_steps)
        return sched

    def denoise(self, sched, x: Tensor, t: Tensor, generator: torch.Generator, **options: Any) -> Tensor:
        """One step x_t -> x_{t_prev}: the UNet, then the scheduler's fused step."""
        return sched.step(self.unet(x, t), t, x, generator=generator).prev_sample

    @torch.no_grad()
    def sample(self, num: int, generator: torch.Generator, steps: Optional[int] = None, noise: Optional[Tensor] = None,
               **options: Any) -> Tensor:
        """num images in [-1, 1]: start from noise (drawn from `generator`, or given), denoise per `sampler`."""
        c = self.config
        dev = next(self.parameters()).device
        if noise is None:
            noise = torch.randn(num, c.in_channels, c.image_size, c.image_size, generator=generator,
                                device=generator.device)
        x = noise.to(dev)
        sched = self.sampler(steps, **options)
        for t in sched.timesteps:
            x = self.denoise(sched, x, t, generator, **options)
        return x.clamp(-1, 1)

    @torch.no_grad()
    def generate(self, num: int, generator: torch.Generator, **options: Any) -> Tensor:
        return self.sample(num, generator, **options)

    @torch.no_grad()
    def preview(self, batch: Dict[str, Tensor], generator: torch.Generator) -> Tensor:
        return self.generate(min(16, batch["image"].shape[0]), generator)

    @torch.no_grad()
    def evaluate(self, split: str = "test", num: int = 500, generator: Optional[torch.Generator] = None,
                 **options: Any) -> Dict[str, Any]:
        """FD-digits and KID of `num` samples against the real `split` (each with floor and ceiling)."""
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        real = data.load(self.config.data, split, image_size=self.config.image_size)["image"][:num]
        fake = self.generate(len(real), generator, **options).float().cpu()
        n, size = len(real), self.config.image_size
        return {"num": n,
                "fd_digits": metrics.bounds("fd_digits", metrics.fd_digits(fake, real), num=n, image_size=size),
                "kid": metrics.bounds("kid", metrics.kid(fake, real), num=n, image_size=size)}
