"""Drop-in modules built on the fused ops."""
from .attention import Attention, CrossAttention
from .norm import AdaIN, GroupNormSiLU, InstanceNorm2d
from .quantizer import VectorQuantizer, VQOutput
from .scheduler import DDIMScheduler, DDPMScheduler, SchedulerOutput

__all__ = ["AdaIN", "Attention", "CrossAttention", "DDIMScheduler", "DDPMScheduler", "GroupNormSiLU", "InstanceNorm2d", "SchedulerOutput",
           "VectorQuantizer", "VQOutput"]
