"""Benchmark cases and their registry. The case modules (:data:`CASE_MODULES`) register their cases
when first asked for, so that they can import this kit without an import cycle."""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import torch

from .timing import Impl

DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16",
               torch.float64: "float64"}
# The per-op cases, genkernels.patch on diffusers models, the end-to-end model cases.
CASE_MODULES = ("genkernels.bench_cases", "genkernels.bench_patch", "genkernels.bench_models")


@dataclass
class Case:
    """One benchmark configuration of one op; `setup(names)` allocates inputs and returns impls."""
    op: str
    shape: tuple
    dtype: torch.dtype
    layout: str                      # "nchw", "channels_last", or whatever the op calls its layouts
    pass_: str                       # "fwd" or "fwd+bwd"
    device: torch.device
    bytes_moved: int                 # minimal DRAM traffic of one call
    copy_bytes: int                  # size of the copy whose bandwidth is the memory roofline
    setup: Callable[[Sequence[str]], Dict[str, Impl]]
    impl_names: List[str]
    extra: dict = field(default_factory=dict)
    peak_memory: bool = False        # also measure each impl's peak extra memory (peak_extra_bytes)
    count_launches: bool = False     # also count each impl's kernel launches per call (count_launches)
    flops: Optional[int] = None      # minimal FLOPs of one call, for the ops a matmul rate can bound

    @property
    def label(self) -> str:
        shape = "x".join(map(str, self.shape)) if isinstance(self.shape, tuple) else str(self.shape)
        return f"{self.op} {shape} {DTYPE_NAMES.get(self.dtype, str(self.dtype))} {self.layout} {self.pass_}"

    @property
    def id(self) -> str:
        return self.label.replace(" ", "-")

    def info(self) -> dict:
        out = {"op": self.op, "shape": list(self.shape) if isinstance(self.shape, tuple) else self.shape,
               "dtype": DTYPE_NAMES.get(self.dtype, str(self.dtype)), "layout": self.layout,
               "pass": self.pass_, "device": str(self.device), **self.extra}
        if self.flops is not None:
            out["flops"] = int(self.flops)
        return out


CaseFactory = Callable[[torch.device, bool, bool], List[Case]]
_REGISTRY: Dict[str, CaseFactory] = {}


def register(op: str):
    """Decorator: ``@register("adain") def cases(device, quick, reference) -> list[Case]``."""
    def deco(fn: CaseFactory) -> CaseFactory:
        _REGISTRY[op] = fn
        return fn
    return deco


def _load_case_modules() -> None:
    for name in CASE_MODULES:
        importlib.import_module(name)


def registered_ops() -> List[str]:
    _load_case_modules()
    return list(_REGISTRY)


def cases(op: str, device, quick: bool = False, reference: bool = False,
          dtypes: Optional[Iterable[str]] = None) -> List[Case]:
    _load_case_modules()
    if op not in _REGISTRY:
        raise ValueError(f"no benchmark cases registered for op {op!r}; known: {registered_ops()}")
    out = _REGISTRY[op](torch.device(device), quick, reference)
    if dtypes:
        keep = {d.strip() for d in dtypes}
        out = [c for c in out if DTYPE_NAMES.get(c.dtype, str(c.dtype)) in keep]
    return out
