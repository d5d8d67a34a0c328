"""genkernels: fused kernels for the hot paths of image generative models, as PyTorch ops."""
from .backend import BACKENDS, available_backends, current_backend, use_backend
from .ops import group_norm_silu, group_norm_silu_reference

__version__ = "0.1.0"
__all__ = ["BACKENDS", "available_backends", "current_backend", "use_backend", "group_norm_silu",
           "group_norm_silu_reference", "__version__"]
