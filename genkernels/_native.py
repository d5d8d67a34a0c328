"""The one place that loads the compiled modules and calls into them.

Kernels in ``genkernels._C`` (CPU) and ``genkernels._C_cuda`` share one calling convention
(csrc/common/flat_args.h): ``kernel(dtype_code, ptrs, nbytes, ints, floats, ctx...)``. This module turns
tensors into that call (each tensor's address and the bytes its view spans, which the native side
checks against what the kernel will touch); everything torch (allocation, streams) stays on the
Python side.
"""
from __future__ import annotations

import importlib
from typing import Optional, Sequence

import torch

DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}

_modules: dict = {}
_errors: dict = {}


def load(name: str):
    """Returns the native module `name` ("_C" or "_C_cuda") or None; the import error is kept."""
    if name not in _modules:
        try:
            _modules[name] = importlib.import_module(f"genkernels.{name}")
        except ImportError as e:  # not built (no compiler/nvcc at install time) or broken
            _modules[name] = None
            _errors[name] = f"{type(e).__name__}: {e}"
    return _modules[name]


def load_error(name: str) -> Optional[str]:
    load(name)
    return _errors.get(name)


profiler_on = torch._C._autograd._profiler_enabled


def nbytes(t: Optional[torch.Tensor]) -> int:
    """Bytes from t.data_ptr() to the end of the last element of the view t (0 for None / empty)."""
    if t is None:
        return 0
    if t.is_contiguous():
        return t.numel() * t.element_size()
    end = 1
    for n, s in zip(t.shape, t.stride()):
        if n == 0:
            return 0
        end += (n - 1) * s
    return end * t.element_size()


def call(kernel: str, dtype: torch.dtype, tensors: Sequence[Optional[torch.Tensor]],
         ints: Sequence[int], floats: Sequence[float] = ()) -> None:
    """Runs native `kernel` on the device of the first tensor (CPU: torch's thread count;
    CUDA: torch's current stream on that device)."""
    dev = tensors[0].device
    ptrs = [0 if t is None else t.data_ptr() for t in tensors]
    sizes = [nbytes(t) for t in tensors]
    code = DTYPE_CODES[dtype]
    if dev.type == "cpu":
        fn, ctx = getattr(load("_C"), kernel), (torch.get_num_threads(),)
    else:
        fn, ctx = getattr(load("_C_cuda"), kernel), (dev.index, torch.cuda.current_stream(dev).cuda_stream)
    if profiler_on():
        # a range `genkernels::<kernel>`: the eager fast path skips the dispatcher, so the profiler
        # (and the benchmark's launch count) would not see the kernel otherwise
        with torch.profiler.record_function("genkernels::" + kernel):
            fn(code, ptrs, sizes, ints, floats, *ctx)
    else:  # (no context manager: a few us on calls that are mostly overhead)
        fn(code, ptrs, sizes, ints, floats, *ctx)
