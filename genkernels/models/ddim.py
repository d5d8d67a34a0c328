"""DDIM (Song et al. 2021): deterministic (eta = 0) or stochastic sampling of a DDPM-trained UNet with any
number of steps. Training is DDPM's (ddpm.py); only the sampler differs: ``genkernels.nn.DDIMScheduler``,
one fused ``ddim_step`` per step, the same numbers as diffusers' ``DDIMScheduler`` loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from ..nn import DDIMScheduler
from .ddpm import DDPM, DIGITS, TINY, DDPMConfig


@dataclass
class DDIMConfig(DDPMConfig):
    sample_steps: int = 50
    eta: float = 0.0                      # 0: deterministic DDIM; 1: DDPM-like posterior variance
    timestep_spacing: str = "leading"     # as diffusers' DDIMScheduler: leading | trailing | linspace

    def __post_init__(self):
        super().__post_init__()
        if self.eta < 0:
            raise ValueError(f"{type(self).__name__}: `eta` must be >= 0, got {self.eta}")


class DDIM(DDPM):
    name = "ddim"
    description = "DDIM sampling (any steps, eta) of a DDPM-trained UNet on the fused ddim_step"
    Config = DDIMConfig
    presets = {"tiny": TINY, "digits": DIGITS}
    sample_options = {**DDPM.sample_options,
                      "--eta": dict(dest="eta", type=float, help="DDIM eta (default: the config's; 0 deterministic)")}

    def sampler(self, steps: Optional[int] = None, **options: Any):
        kw = dict(self.schedule_kwargs(), timestep_spacing=self.config.timestep_spacing)
        sched = DDIMScheduler(**kw)
        sched.set_timesteps(steps or self.config.sample_steps)
        return sched

    def _eta(self, eta: Optional[float]) -> float:
        eta = self.config.eta if eta is None else float(eta)
        if eta < 0:
            raise ValueError(f"ddim: `eta` must be >= 0, got {eta}")
        return eta

    def denoise(self, sched, x, t, generator, eta: Optional[float] = None, **options: Any):
        return sched.step(self.unet(x, t), t, x, eta=self._eta(eta), generator=generator).prev_sample
