"""CUDA's launch limits for genkernels' Triton launches (csrc/cuda/common.cuh checks the CUDA ones):
grid x up to 2**31 - 1 programs, y and z up to 65,535. A launch beyond them fails on the GPU while the
interpreter (the CPU test path) runs it, so every wrapper builds its grid through `grid()`.

Every launch also goes through `kernel()`: inside `traced()` (torch.compile tracing an op's Triton
implementation, ops/_common.py) the kernel is wrapped by torch.library.wrap_triton so that the compiler
sees the launch; elsewhere it is the kernel itself (a wrapped launch in eager costs a dispatch)."""
from __future__ import annotations

import contextlib
import contextvars
from typing import Tuple

import torch

_tracing = contextvars.ContextVar("genkernels_triton_tracing", default=False)


@contextlib.contextmanager
def traced():
    """Launches inside are recorded by torch.compile's tracing (see `kernel`)."""
    token = _tracing.set(True)
    try:
        yield
    finally:
        _tracing.reset(token)


def kernel(fn):
    """`fn` (a @triton.jit kernel) as a wrapper launches it: ``kernel(fn)[grid](*args)``."""
    return torch.library.wrap_triton(fn) if _tracing.get() else fn

MAX_GRID = (2**31 - 1, 65535, 65535)


def grid(*dims: int, kernel: str) -> Tuple[int, ...]:
    """`dims` as a Triton grid, or ValueError naming `kernel` when an axis is outside CUDA's limits."""
    if not 1 <= len(dims) <= 3:
        raise ValueError(f"{kernel}: a grid has 1 to 3 axes, got {dims}")
    for axis, (n, limit) in enumerate(zip(dims, MAX_GRID)):
        if not 1 <= n <= limit:
            raise ValueError(f"{kernel}: grid axis {axis} has {n} programs, outside CUDA's limit 1..{limit}")
    return tuple(dims)
