"""Drop-in modules built on the fused ops."""
from .norm import GroupNormSiLU

__all__ = ["GroupNormSiLU"]
