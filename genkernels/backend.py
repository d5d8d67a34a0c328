"""Which implementation runs: ``auto`` (default), ``reference``, ``cpu``, ``triton`` or ``cuda``.

    genkernels.set_backend("triton")           # process-wide, from now on
    with genkernels.use_backend("reference"):  # this thread (context) only, inside the block
        ...
    GENKERNELS_BACKEND=cuda python train.py    # process-wide, from the environment

``use_backend`` is a ``contextvars`` setting: threads (and asyncio tasks) each see their own, so two
threads in overlapping blocks never change each other's backend; outside any block a thread sees
the process-wide one. Called as a plain statement, ``use_backend(name)`` selects the backend for the
rest of the current thread. Autograd's backward runs on the backend its forward used.

``auto`` takes ``cpu`` for CPU tensors and, for CUDA tensors, the op's preferred GPU backend that is
installed; when none is, it falls back to ``reference`` with one warning. A forced backend that
cannot run the given tensors is an error, never a silent fallback.
"""
from __future__ import annotations

import contextvars
import os
import warnings
from typing import List

import torch

from . import _native

BACKENDS = ("auto", "reference", "cpu", "triton", "cuda")

_process = os.environ.get("GENKERNELS_BACKEND", "auto").strip().lower() or "auto"
if _process not in BACKENDS:
    raise ValueError(f"GENKERNELS_BACKEND={_process!r}: expected one of {BACKENDS}")
_local: contextvars.ContextVar = contextvars.ContextVar("genkernels_backend", default=None)  # None: _process
_warned: set = set()


def _checked(fn: str, name) -> str:
    name = str(name).lower()
    if name not in BACKENDS:
        raise ValueError(f"{fn}: unknown backend {name!r}; expected one of {BACKENDS}")
    return name


def current_backend() -> str:
    """The backend selected in this thread (context), else the process-wide one."""
    name = _local.get()
    return _process if name is None else name


def set_backend(name: str) -> None:
    """Selects the process-wide backend (what threads see outside a use_backend block)."""
    global _process
    _process = _checked("set_backend", name)


class use_backend:
    """Selects the backend for this thread (context) now; as a context manager, restores the previous
    selection on exit. Other threads are not affected (see the module docstring)."""

    def __init__(self, name: str):
        self.name = _checked("use_backend", name)
        self._prev = _local.get()
        self._token = _local.set(self.name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            _local.reset(self._token)
        except ValueError:  # exited in another context than it was entered in
            _local.set(self._prev)
        return False

    def __repr__(self):
        return f"use_backend({self.name!r})"


def triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _triton_error():
    try:
        import triton  # noqa: F401
    except Exception as e:  # pragma: no cover - depends on the environment
        return f"triton is not importable: {e}"
    return None


def backend_error(name: str, device: torch.device) -> str | None:
    """Why backend `name` cannot run tensors on `device` (None when it can)."""
    dev = device.type
    if name == "reference":
        return None
    if name == "cpu":
        if dev != "cpu":
            return f"backend 'cpu' runs CPU tensors only, got a {dev} tensor"
        err = _native.load_error("_C")
        return f"genkernels._C is not built ({err})" if err else None
    if name == "triton":
        if dev == "cpu" and not triton_interpret():
            return "backend 'triton' runs CPU tensors only with TRITON_INTERPRET=1 set before triton is imported"
        if dev not in ("cpu", "cuda"):
            return f"backend 'triton' runs CUDA tensors, got a {dev} tensor"
        return _triton_error()
    if name == "cuda":
        if dev != "cuda":
            return f"backend 'cuda' runs CUDA tensors only, got a {dev} tensor"
        err = _native.load_error("_C_cuda")
        return f"genkernels._C_cuda is not built ({err})" if err else None
    return f"unknown backend {name!r}"


def resolve(op: str, where, gpu_order=("cuda", "triton"), name: str | None = None) -> str:
    """The backend that runs `op` on `where` (a torch.device, or a tensor: its device): `name` if given
    (e.g. the one a forward pass used), else the current selection."""
    if type(where) is torch.device:
        device = where
    elif name is None and where.is_cpu and current_backend() == "auto" and _native._modules.get("_C") is not None:
        return "cpu"  # the common eager case, without building a device object or the lookups below
    else:
        device = where.device
    name = current_backend() if name is None or name == "auto" else name
    if name != "auto":
        err = backend_error(name, device)
        if err:
            raise RuntimeError(f"genkernels.{op}: {err}")
        return name
    if device.type == "cpu":
        candidates = ("cpu",)
    elif device.type == "cuda":
        candidates = gpu_order
    else:
        candidates = ()
    for cand in candidates:
        if backend_error(cand, device) is None:
            return cand
    key = (op, device.type)
    if key not in _warned and candidates:
        _warned.add(key)
        why = "; ".join(backend_error(c, device) or "" for c in candidates)
        warnings.warn(f"genkernels.{op}: no compiled backend for {device.type} tensors ({why}); "
                      "using the slow reference implementation", RuntimeWarning, stacklevel=3)
    return "reference"


def available_backends(device: str | torch.device | None = None) -> List[str]:
    """Backends that can run on `device` (default: CUDA if present, else CPU)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    return [b for b in BACKENDS[1:] if backend_error(b, device) is None]
