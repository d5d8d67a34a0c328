"""The fused ops: torch.library registrations, autograd and the reference implementations."""
from .adain import adain, adain_reference
from .attention import attention, attention_reference
from .ddim_step import ddim_step, ddim_step_reference, ddpm_step, ddpm_step_reference
from .group_norm_silu import group_norm_silu, group_norm_silu_reference
from .vq_nearest import vq_nearest, vq_nearest_reference

__all__ = ["adain", "adain_reference", "attention", "attention_reference", "ddim_step", "ddim_step_reference", "ddpm_step", "ddpm_step_reference",
           "group_norm_silu", "group_norm_silu_reference", "vq_nearest",
           "vq_nearest_reference"]
