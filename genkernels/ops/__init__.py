"""The fused ops: torch.library registrations, autograd and the reference implementations."""
from .adain import adain, adain_reference
from .group_norm_silu import group_norm_silu, group_norm_silu_reference

__all__ = ["adain", "adain_reference", "group_norm_silu", "group_norm_silu_reference"]
