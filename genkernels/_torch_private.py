"""The private torch functions genkernels reads on every eager call, in one place and checked once.

The eager fast path (ops/_common.plain_eager) skips the dispatcher only when nothing is watching the
call: no torch dispatch or function mode, no functorch transform, no JIT tracer. torch has no public
way to ask that cheaply, so these are private ``torch._C`` functions; each is bound once (a lookup
per call shows on small calls). Where this torch lacks any of them (renamed in a later version),
``probes`` is None: every call then takes the dispatcher path, which is always correct, only slower.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch


class Probes(NamedTuple):
    dispatch_modes: Callable[[], int]       # torch dispatch modes on the stack
    function_modes: Callable[[], bool]      # a torch function mode is enabled
    functorch_active: Callable[[], bool]    # inside grad / vmap / jvp / ...
    jit_tracing: Callable[[], bool]         # torch.jit.trace is recording
    profiler_enabled: Callable[[], bool]    # the autograd profiler is on


def _bind() -> Optional[Probes]:
    C = torch._C
    try:
        return Probes(C._len_torch_dispatch_stack, C._is_torch_function_mode_enabled,
                      C._are_functorch_transforms_active, C._is_tracing, C._autograd._profiler_enabled)
    except AttributeError:
        return None


probes: Optional[Probes] = _bind()
