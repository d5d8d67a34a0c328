"""The fused ops: torch.library registrations, autograd and the reference implementations."""
from .group_norm_silu import group_norm_silu, group_norm_silu_reference

__all__ = ["group_norm_silu", "group_norm_silu_reference"]
