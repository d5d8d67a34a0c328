"""genkernels: fused kernels for the hot paths of image generative models, as PyTorch ops.

``genkernels.patch(model)`` swaps the fused ops into an existing model (a diffusers pipeline or any
nn.Module) in place; ``genkernels.diffusers`` (imported on demand, needs diffusers) holds the diffusers
pieces it uses."""
from .backend import BACKENDS, available_backends, current_backend, set_backend, use_backend
from .ops import (adain, adain_reference, attention, attention_reference, ddim_step, ddim_step_reference,
                  ddpm_step, ddpm_step_reference, group_norm_silu, group_norm_silu_reference, vq_nearest,
                  vq_nearest_reference)

from . import nn  # noqa: E402  (drop-in modules; imports the ops)
from .patch import PatchReport, patch, unpatch  # noqa: E402  (above nn; the name `patch` is the function)

__version__ = "0.1.0"
__all__ = ["BACKENDS", "available_backends", "current_backend", "set_backend", "use_backend", "adain", "adain_reference",
           "attention", "attention_reference",
           "ddim_step", "ddim_step_reference", "ddpm_step", "ddpm_step_reference",
           "group_norm_silu", "group_norm_silu_reference", "vq_nearest", "vq_nearest_reference", "PatchReport", "patch",
           "unpatch", "__version__"]
