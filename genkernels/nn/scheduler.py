"""DDIM / DDPM schedulers backed by the fused step (``genkernels.ddim_step`` / ``ddpm_step``).

They mirror diffusers' ``DDIMScheduler`` / ``DDPMScheduler`` (same constructor arguments, config
names, timesteps and numbers), so a diffusers sampling loop runs unchanged:

    sched = DDIMScheduler.from_config(pipe.scheduler.config)   # or DDIMScheduler(beta_schedule=...)
    sched.set_timesteps(50)
    for t in sched.timesteps:
        eps = unet(torch.cat([x, x]), t, cond)                  # [uncond; cond]
        x = sched.step(eps, t, x, guidance_scale=7.5).prev_sample

Each step is one kernel launch with classifier-free guidance fused in (``guidance_scale``, an
extension of diffusers' API). No host synchronisation per step: a timestep given as a Python int or
a CPU tensor becomes Python-float alphas (kernel scalars, nothing copied to the device); a timestep
tensor on the device, 0-d or [N] (per-sample timesteps), is turned into alpha tensors by indexing a
device copy of ``alphas_cumprod``. Not supported: ``thresholding=True`` (dynamic thresholding needs a
per-sample quantile, another pass) and DDPM's learned variances.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch

from ..ops.ddim_step import ddim_step, ddpm_step, draw_noise

Tensor = torch.Tensor


@dataclass
class SchedulerOutput:
    """Like diffusers' DDIMSchedulerOutput / DDPMSchedulerOutput."""
    prev_sample: Tensor
    pred_original_sample: Optional[Tensor] = None

    def __getitem__(self, i):
        return (self.prev_sample, self.pred_original_sample)[i]


DDIMSchedulerOutput = SchedulerOutput
DDPMSchedulerOutput = SchedulerOutput


class SchedulerConfig(dict):
    """The constructor arguments, readable as attributes (like diffusers' FrozenDict config)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def betas_for_alpha_bar(num_diffusion_timesteps: int, max_beta: float = 0.999) -> Tensor:
    """The cosine ("squaredcos_cap_v2") schedule, as diffusers computes it."""
    def alpha_bar(t):
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - alpha_bar((i + 1) / num_diffusion_timesteps) / alpha_bar(i / num_diffusion_timesteps), max_beta)
             for i in range(num_diffusion_timesteps)]
    return torch.tensor(betas, dtype=torch.float32)


def rescale_zero_terminal_snr(betas: Tensor) -> Tensor:
    """Rescales betas to zero terminal SNR (arXiv:2305.08891, Algorithm 1), as diffusers does."""
    alphas_bar_sqrt = torch.cumprod(1.0 - betas, dim=0).sqrt()
    a0, aT = alphas_bar_sqrt[0].clone(), alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt -= aT
    alphas_bar_sqrt *= a0 / (a0 - aT)
    alphas_bar = alphas_bar_sqrt ** 2
    alphas = torch.cat([alphas_bar[0:1], alphas_bar[1:] / alphas_bar[:-1]])
    return 1 - alphas


def make_betas(name: str, num_train_timesteps: int, beta_start: float, beta_end: float, beta_schedule: str,
               trained_betas=None, rescale_betas_zero_snr: bool = False) -> Tensor:
    if trained_betas is not None:
        betas = torch.tensor(trained_betas, dtype=torch.float32)
    elif beta_schedule == "linear":
        betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)
    elif beta_schedule == "scaled_linear":
        betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, num_train_timesteps, dtype=torch.float32) ** 2
    elif beta_schedule in ("squaredcos_cap_v2", "cosine"):
        betas = betas_for_alpha_bar(num_train_timesteps)
    else:
        raise ValueError(f"{name}: `beta_schedule` must be 'linear', 'scaled_linear' or 'squaredcos_cap_v2' "
                         f"(alias 'cosine'), got {beta_schedule!r}")
    if rescale_betas_zero_snr:
        betas = rescale_zero_terminal_snr(betas)
    return betas


def _spaced_timesteps(name: str, spacing: str, T: int, n: int, steps_offset: int) -> np.ndarray:
    if spacing == "linspace":
        return np.linspace(0, T - 1, n).round()[::-1].copy().astype(np.int64)
    if spacing == "leading":
        ratio = T // n
        return (np.arange(0, n) * ratio).round()[::-1].copy().astype(np.int64) + steps_offset
    if spacing == "trailing":
        ratio = T / n
        return np.round(np.arange(T, 0, -ratio)).astype(np.int64) - 1
    raise ValueError(f"{name}: `timestep_spacing` must be 'leading', 'trailing' or 'linspace', got {spacing!r}")


def _take(table: Tensor, idx: Tensor) -> Tensor:
    """table[idx] for an index tensor of any shape, as a gather (a 0-d index would otherwise become a
    data-dependent select that torch.compile cannot trace without a sync)."""
    return table.index_select(0, idx.reshape(-1)).reshape(idx.shape)


class _Scheduler:
    order = 1
    init_noise_sigma = 1.0
    _name = "Scheduler"

    def _setup(self, config: Dict[str, Any]):
        self.config = SchedulerConfig(config)
        c = self.config
        if c.thresholding:
            raise ValueError(f"{self._name}: thresholding=True is not supported by the fused step (dynamic "
                             "thresholding needs a per-sample quantile of x0, a second pass); use clip_sample")
        if c.prediction_type not in ("epsilon", "sample", "v_prediction"):
            raise ValueError(f"{self._name}: `prediction_type` must be 'epsilon', 'sample' or 'v_prediction', "
                             f"got {c.prediction_type!r}")
        if c.timestep_spacing not in ("leading", "trailing", "linspace"):
            raise ValueError(f"{self._name}: `timestep_spacing` must be 'leading', 'trailing' or 'linspace', "
                             f"got {c.timestep_spacing!r}")
        self.betas = make_betas(self._name, c.num_train_timesteps, c.beta_start, c.beta_end, c.beta_schedule,
                                c.trained_betas, c.rescale_betas_zero_snr)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self._ac: List[float] = self.alphas_cumprod.tolist()  # exact float32 values, as Python floats
        self._ac_dev: Dict[torch.device, Tensor] = {}
        self.num_inference_steps = None
        self.timesteps = torch.from_numpy(np.arange(0, c.num_train_timesteps)[::-1].copy().astype(np.int64))

    @classmethod
    def from_config(cls, config=None, **overrides):
        """From a diffusers scheduler, its ``.config``, or a dict (e.g. a pipeline's scheduler_config.json);
        keys this scheduler does not know (``_class_name``, other schedulers' options) are ignored."""
        if hasattr(config, "config") and not isinstance(config, dict):
            config = config.config
        cfg = dict(config or {})
        cfg.update(overrides)
        import inspect

        known = set(inspect.signature(cls.__init__).parameters) - {"self"}
        return cls(**{k: v for k, v in cfg.items() if k in known})

    from_diffusers = from_config

    def scale_model_input(self, sample: Tensor, timestep=None) -> Tensor:
        return sample

    def __len__(self):
        return self.config.num_train_timesteps

    def _ac_on(self, device: torch.device) -> Tensor:
        t = self._ac_dev.get(device)
        if t is None:
            t = self._ac_dev[device] = self.alphas_cumprod.to(device)
        return t

    def _host_timestep(self, timestep) -> Optional[int]:
        """The timestep as an int when reading it costs no device sync, else None."""
        if isinstance(timestep, Tensor):
            if timestep.device.type == "cpu" and timestep.numel() == 1 and not torch.compiler.is_compiling():
                return int(timestep.reshape(()))
            return None
        if isinstance(timestep, bool) or not isinstance(timestep, (numbers.Integral, np.integer)):
            raise TypeError(f"{self._name}: `timestep` must be an int or an integer tensor, "
                            f"got {type(timestep).__name__}")
        return int(timestep)

    def add_noise(self, original_samples: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        ac = self._ac_on(original_samples.device).to(original_samples.dtype)
        timesteps = timesteps.to(original_samples.device)
        a = _take(ac, timesteps).flatten()
        shape = (-1,) + (1,) * (original_samples.dim() - 1)
        return a.sqrt().reshape(shape) * original_samples + (1 - a).sqrt().reshape(shape) * noise

    def get_velocity(self, sample: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        ac = self._ac_on(sample.device).to(sample.dtype)
        a = _take(ac, timesteps.to(sample.device)).flatten()
        shape = (-1,) + (1,) * (sample.dim() - 1)
        return a.sqrt().reshape(shape) * noise - (1 - a).sqrt().reshape(shape) * sample

    def _clip(self):
        return float(self.config.clip_sample_range) if self.config.clip_sample else None


class DDIMScheduler(_Scheduler):
    """diffusers' ``DDIMScheduler`` on the fused step (same arguments and numbers; see the module doc)."""
    _name = "DDIMScheduler"

    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001, beta_end: float = 0.02,
                 beta_schedule: str = "linear", trained_betas=None, clip_sample: bool = True,
                 set_alpha_to_one: bool = True, steps_offset: int = 0, prediction_type: str = "epsilon",
                 thresholding: bool = False, dynamic_thresholding_ratio: float = 0.995,
                 clip_sample_range: float = 1.0, sample_max_value: float = 1.0, timestep_spacing: str = "leading",
                 rescale_betas_zero_snr: bool = False):
        self._setup(dict(num_train_timesteps=num_train_timesteps, beta_start=beta_start, beta_end=beta_end,
                         beta_schedule=beta_schedule, trained_betas=trained_betas, clip_sample=clip_sample,
                         set_alpha_to_one=set_alpha_to_one, steps_offset=steps_offset,
                         prediction_type=prediction_type, thresholding=thresholding,
                         dynamic_thresholding_ratio=dynamic_thresholding_ratio,
                         clip_sample_range=clip_sample_range, sample_max_value=sample_max_value,
                         timestep_spacing=timestep_spacing, rescale_betas_zero_snr=rescale_betas_zero_snr))
        self.final_alpha_cumprod = torch.tensor(1.0) if set_alpha_to_one else self.alphas_cumprod[0]
        self._final = float(self.final_alpha_cumprod)

    def set_timesteps(self, num_inference_steps: int, device: Union[str, torch.device, None] = None):
        T = self.config.num_train_timesteps
        if num_inference_steps > T:
            raise ValueError(f"DDIMScheduler: `num_inference_steps`={num_inference_steps} cannot be larger than "
                             f"num_train_timesteps={T}")
        self.num_inference_steps = num_inference_steps
        ts = _spaced_timesteps(self._name, self.config.timestep_spacing, T, num_inference_steps,
                               self.config.steps_offset)
        self.timesteps = torch.from_numpy(ts).to(device)

    def alphas_at(self, timestep, device: torch.device):
        """(alpha_prod_t, alpha_prod_t_prev) for `timestep`: Python floats for an int / CPU scalar
        timestep, device tensors ([] or [N]) for a device timestep tensor; never a host sync."""
        step = self.config.num_train_timesteps // self.num_inference_steps
        t = self._host_timestep(timestep)
        if t is not None:
            prev = t - step
            return self._ac[t], (self._ac[prev] if prev >= 0 else self._final)
        ac = self._ac_on(device)
        t = timestep.to(device=device, dtype=torch.long)
        prev = t - step
        a_t = _take(ac, t)
        a_p = torch.where(prev >= 0, _take(ac, prev.clamp(min=0)), torch.full_like(a_t, self._final))
        return a_t, a_p

    def step(self, model_output: Tensor, timestep, sample: Tensor, eta: float = 0.0,
             use_clipped_model_output: bool = False, generator: Optional[torch.Generator] = None,
             variance_noise: Optional[Tensor] = None, return_dict: bool = True, *,
             guidance_scale: Optional[float] = None):
        """diffusers' DDIMScheduler.step; with ``guidance_scale``, model_output is [uncond; cond] ([2N, ...])."""
        if self.num_inference_steps is None:
            raise ValueError("DDIMScheduler: call set_timesteps() before step()")
        a_t, a_p = self.alphas_at(timestep, sample.device)
        noise = None
        if eta > 0:
            if variance_noise is not None and generator is not None:
                raise ValueError("DDIMScheduler: pass either `generator` or `variance_noise`, not both")
            noise = variance_noise if variance_noise is not None else draw_noise(sample, generator)
        prev, x0 = ddim_step(sample, model_output, a_t, a_p, eta, noise,
                             prediction_type=self.config.prediction_type, guidance_scale=guidance_scale,
                             clip_sample_range=self._clip(), use_clipped_model_output=use_clipped_model_output)
        return SchedulerOutput(prev, x0) if return_dict else (prev, x0)


class DDPMScheduler(_Scheduler):
    """diffusers' ``DDPMScheduler`` on the fused step (variance types fixed_small, fixed_small_log,
    fixed_large; the noise is drawn only where t > 0, as diffusers does)."""
    _name = "DDPMScheduler"

    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001, beta_end: float = 0.02,
                 beta_schedule: str = "linear", trained_betas=None, variance_type: str = "fixed_small",
                 clip_sample: bool = True, prediction_type: str = "epsilon", thresholding: bool = False,
                 dynamic_thresholding_ratio: float = 0.995, clip_sample_range: float = 1.0,
                 sample_max_value: float = 1.0, timestep_spacing: str = "leading", steps_offset: int = 0,
                 rescale_betas_zero_snr: bool = False):
        if variance_type not in ("fixed_small", "fixed_small_log", "fixed_large"):
            raise ValueError(f"DDPMScheduler: `variance_type` {variance_type!r} is not supported (fixed_small, "
                             "fixed_small_log, fixed_large)")
        self._setup(dict(num_train_timesteps=num_train_timesteps, beta_start=beta_start, beta_end=beta_end,
                         beta_schedule=beta_schedule, trained_betas=trained_betas, variance_type=variance_type,
                         clip_sample=clip_sample, prediction_type=prediction_type, thresholding=thresholding,
                         dynamic_thresholding_ratio=dynamic_thresholding_ratio,
                         clip_sample_range=clip_sample_range, sample_max_value=sample_max_value,
                         timestep_spacing=timestep_spacing, steps_offset=steps_offset,
                         rescale_betas_zero_snr=rescale_betas_zero_snr))
        self.variance_type = variance_type
        self.custom_timesteps = False
        self._prev_list: Optional[List[int]] = None  # prev timestep of each t; None: t - 1
        self._prev_dev: Dict[torch.device, Tensor] = {}

    def set_timesteps(self, num_inference_steps: Optional[int] = None, device=None,
                      timesteps: Optional[List[int]] = None):
        T = self.config.num_train_timesteps
        if num_inference_steps is not None and timesteps is not None:
            raise ValueError("DDPMScheduler: pass either `num_inference_steps` or `timesteps`")
        if timesteps is not None:
            ts = np.array(timesteps, dtype=np.int64)
            if np.any(ts[1:] >= ts[:-1]):
                raise ValueError("DDPMScheduler: custom `timesteps` must be in descending order")
            if ts[0] >= T:
                raise ValueError(f"DDPMScheduler: `timesteps` must start below num_train_timesteps={T}")
            self.custom_timesteps = True
        else:
            if num_inference_steps > T:
                raise ValueError(f"DDPMScheduler: `num_inference_steps`={num_inference_steps} cannot be larger "
                                 f"than num_train_timesteps={T}")
            self.num_inference_steps = num_inference_steps
            self.custom_timesteps = False
            ts = _spaced_timesteps(self._name, self.config.timestep_spacing, T, num_inference_steps,
                                   self.config.steps_offset)
        self.timesteps = torch.from_numpy(ts).to(device)
        prev = [t - 1 for t in range(max(T, int(ts.max()) + 1))]
        lst = ts.tolist()
        for i, t in enumerate(lst):
            prev[t] = lst[i + 1] if i + 1 < len(lst) else -1
        self._prev_list = prev
        self._prev_dev = {}

    def previous_timestep(self, timestep: int) -> int:
        t = int(timestep)
        return self._prev_list[t] if self._prev_list is not None else t - 1

    def alphas_at(self, timestep, device: torch.device):
        t = self._host_timestep(timestep)
        if t is not None:
            prev = self.previous_timestep(t)
            return self._ac[t], (self._ac[prev] if prev >= 0 else 1.0)
        ac = self._ac_on(device)
        t = timestep.to(device=device, dtype=torch.long)
        if self._prev_list is None:
            prev = t - 1
        else:
            table = self._prev_dev.get(device)
            if table is None:
                table = self._prev_dev[device] = torch.tensor(self._prev_list, dtype=torch.long).to(device)
            prev = _take(table, t)
        a_t = _take(ac, t)
        a_p = torch.where(prev >= 0, _take(ac, prev.clamp(min=0)), torch.ones_like(a_t))
        return a_t, a_p

    def step(self, model_output: Tensor, timestep, sample: Tensor, generator: Optional[torch.Generator] = None,
             return_dict: bool = True, *, guidance_scale: Optional[float] = None,
             variance_noise: Optional[Tensor] = None):
        """diffusers' DDPMScheduler.step (noise from `generator`, or `variance_noise`, only where t > 0)."""
        a_t, a_p = self.alphas_at(timestep, sample.device)
        t = self._host_timestep(timestep)
        noise = None
        if t is None or t > 0:
            noise = variance_noise if variance_noise is not None else draw_noise(sample, generator)
            if t is None:  # device timesteps: zero the noise of samples at t = 0, without a sync
                tt = timestep.to(sample.device).reshape((-1,) + (1,) * (sample.dim() - 1))
                noise = noise * (tt > 0).to(noise.dtype)
        prev, x0 = ddpm_step(sample, model_output, a_t, a_p, noise,
                             prediction_type=self.config.prediction_type, guidance_scale=guidance_scale,
                             clip_sample_range=self._clip(), variance_type=self.variance_type)
        return SchedulerOutput(prev, x0) if return_dict else (prev, x0)
