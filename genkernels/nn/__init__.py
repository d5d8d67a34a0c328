"""Drop-in modules built on the fused ops."""
from .norm import AdaIN, GroupNormSiLU, InstanceNorm2d
from .quantizer import VectorQuantizer, VQOutput
from .scheduler import DDIMScheduler, DDPMScheduler, SchedulerOutput

__all__ = ["AdaIN", "DDIMScheduler", "DDPMScheduler", "GroupNormSiLU", "InstanceNorm2d", "SchedulerOutput",
           "VectorQuantizer", "VQOutput"]
