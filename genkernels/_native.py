"""The one place that loads the compiled modules and calls into them.

Kernels in ``genkernels._C`` (CPU) and ``genkernels._C_cuda`` share one calling convention
(csrc/common/flat_args.h): ``kernel(dtype_code, ptrs, nbytes, ints, floats, ctx...)``, with the names
of the arguments exported by ``kernel_args()``. This module turns a kernel's arguments, a NamedTuple of
genkernels/ops/_kernels.py checked against those names, into that call (each tensor's address and the
bytes its view spans, which the native side checks against what the kernel will touch); everything
torch (allocation, streams) stays on the Python side.
"""
from __future__ import annotations

import ctypes
import functools
import importlib
import importlib.machinery
import os
import warnings
from typing import Optional

import torch

from ._torch_private import probes

DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}

_modules: dict = {}
_errors: dict = {}
_cuda_runtime: dict = {}  # the CUDA runtime version _C_cuda was built with, kept when the module is refused


def cuda_version_text(v: Optional[int]) -> str:
    """12040 -> "12.4" (how CUDART_VERSION and cuDriverGetVersion encode a CUDA version)."""
    return "none" if v is None else f"{v // 1000}.{v % 1000 // 10}"


@functools.lru_cache(maxsize=None)
def driver_version() -> Optional[int]:
    """The CUDA version the installed driver supports (``cuDriverGetVersion``: 1000 * major + 10 * minor),
    None where no driver library loads. Read through the driver library itself, so that it works where
    the CUDA runtime cannot."""
    for lib in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            cuda = ctypes.CDLL(lib)
        except OSError:
            continue
        v = ctypes.c_int(0)
        return v.value if cuda.cuDriverGetVersion(ctypes.byref(v)) == 0 and v.value > 0 else None
    return None


def driver_too_old(runtime: int, driver: Optional[int]) -> Optional[str]:
    """Why a module linking CUDA runtime `runtime` statically cannot run on `driver`, or None. Since
    CUDA 11 a driver runs any runtime of its own major version (minor version compatibility), not a
    newer major one; with no driver there is nothing to refuse (torch sees no GPU either)."""
    if driver is None or driver // 1000 >= runtime // 1000:
        return None
    return (f"the CUDA driver supports CUDA {cuda_version_text(driver)}, older than the CUDA "
            f"{cuda_version_text(runtime)} runtime genkernels._C_cuda was built with (needs a CUDA {runtime // 1000}.x driver or newer; "
            f"or build the wheel with a CUDA {driver // 1000}.x toolkit, see README 'Building wheels')")


def cuda_versions() -> dict:
    """{"runtime": version _C_cuda was built with or None, "driver": the driver's CUDA version or None}."""
    load("_C_cuda")
    return {"runtime": _cuda_runtime.get("_C_cuda"), "driver": driver_version()}


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _import(name: str):
    """genkernels.<name>, only from this package's own directory: an editable install of another
    checkout would otherwise supply a module this tree lacks (its finder answers after the path's),
    built from other sources than the Python beside it."""
    if importlib.machinery.PathFinder.find_spec(f"genkernels.{name}", [_PACKAGE_DIR]) is None:
        raise ModuleNotFoundError(f"genkernels.{name} is not in {_PACKAGE_DIR} (not built there)")
    return importlib.import_module(f"genkernels.{name}")


def load(name: str):
    """Returns the native module `name` ("_C" or "_C_cuda") or None; the import error is kept. A
    `_C_cuda` whose CUDA runtime the installed driver cannot run is refused once, with one warning:
    every call would fail, while the triton backend (or the reference) works with torch's runtime."""
    if name not in _modules:
        try:
            mod = _import(name)
        except ImportError as e:  # not built (no compiler/nvcc at install time) or broken
            mod = None
            _errors[name] = f"{type(e).__name__}: {e}"
        if mod is not None and name == "_C_cuda":
            _cuda_runtime[name] = mod.runtime_version
            why = driver_too_old(mod.runtime_version, driver_version())
            if why:
                mod, _errors[name] = None, why
                warnings.warn(f"genkernels: backend 'cuda' is off: {why}; GPU tensors run on the triton "
                              "backend, else the reference", RuntimeWarning, stacklevel=2)
        _modules[name] = mod
    return _modules[name]


def load_error(name: str) -> Optional[str]:
    load(name)
    return _errors.get(name)


# (without the probe, every call records its range: correct, a little slower)
profiler_on = probes.profiler_enabled if probes is not None else (lambda: True)


def nbytes(t: Optional[torch.Tensor]) -> int:
    """Bytes from t.data_ptr() to the end of the last element of the view t (0 for None / empty)."""
    if t is None:
        return 0
    if t.is_contiguous():
        return t.nbytes
    end = 1
    for n, s in zip(t.shape, t.stride()):
        if n == 0:
            return 0
        end += (n - 1) * s
    return end * t.element_size()


_layouts: dict = {}  # (module, NamedTuple class) -> layout()


def layout(mod, args_type) -> tuple:
    """(n_tensors, n_tensors + n_ints, workspace): where the tensors and the ints of `args_type`'s
    fields end, and whether the kernel takes a scratch `workspace` after its tensors (the CUDA
    modules), after checking the fields against the native signature of kernel `args_type.KERNEL`
    in `mod` (once per module and kernel)."""
    key = (mod, args_type)
    found = _layouts.get(key)
    if found is None:
        sig = mod.kernel_args().get(args_type.KERNEL)
        if sig is None:
            raise RuntimeError(f"{mod.__name__} has no kernel {args_type.KERNEL!r}")
        ptrs, ints, floats = sig
        workspace = ptrs[-1:] == ("workspace",)
        ptrs = ptrs[:-1] if workspace else ptrs
        if tuple(args_type._fields) != tuple(ptrs) + tuple(ints) + tuple(floats):
            raise RuntimeError(
                f"{args_type.__name__} fields {args_type._fields} do not match the arguments of "
                f"{mod.__name__}.{args_type.KERNEL}: tensors {ptrs}, ints {ints}, floats {floats} "
                "(csrc/common/*_args.h and genkernels/ops/_kernels.py must agree)")
        found = _layouts[key] = (len(ptrs), len(ptrs) + len(ints), workspace)
    return found


def call(args, dtype: torch.dtype) -> None:
    """Runs the native kernel of `args` (a NamedTuple of genkernels/ops/_kernels.py) with data type
    `dtype` on the device of its first tensor (CPU: torch's thread count; CUDA: torch's current
    stream on that device)."""
    first = args[0]
    if first.is_cpu:  # (Tensor.is_cpu: a fraction of device.type's cost, which builds a string)
        mod = load("_C")
        ctx = (torch.get_num_threads(),)
    else:
        dev = first.device
        mod = load("_C_cuda")
        ctx = (dev.index, torch.cuda.current_stream(dev).cuda_stream)
    kind = type(args)
    n_ptrs, n_ints, workspace = _layouts.get((mod, kind)) or layout(mod, kind)
    ptrs, sizes = [], []
    for t in args[:n_ptrs]:
        if t is None:
            ptrs.append(0)
            sizes.append(0)
        else:
            ptrs.append(t.data_ptr())
            sizes.append(t.nbytes if t.is_contiguous() else nbytes(t))  # (nbytes' common case, inline)
    native = (DTYPE_CODES[dtype], ptrs, sizes, args[n_ptrs:n_ints], args[n_ints:])
    if profiler_on():
        # a range `genkernels::<kernel>`: the eager fast path skips the dispatcher, so the profiler
        # (and the benchmark's launch count) would not see the kernel otherwise
        with torch.profiler.record_function("genkernels::" + kind.KERNEL):
            _run(mod, kind.KERNEL, workspace, first, native, ctx)
    else:  # (no context manager: a few us on calls that are mostly overhead)
        _run(mod, kind.KERNEL, workspace, first, native, ctx)


_WORKSPACE_SIZES_MAX = 4096  # distinct (kernel, dtype, shape, ...) keys kept; then the cache starts over
_workspace_sizes: dict = {}


def workspace_size(mod, kernel: str, native: tuple, ctx: tuple) -> int:
    """Bytes of scratch `kernel` needs for `native` (its arguments without the workspace): the kernel's
    own size query (``<kernel>_workspace``), asked once per module, kernel, dtype, integer arguments,
    device and each pointer's null-ness and 16-byte alignment (what the launch plans read: sizes,
    SM count, vector loads). Float arguments and the stream are not in the key: no plan reads them,
    and a size that ever came out short is refused by the kernel (a ValueError naming `workspace`),
    never used."""
    code, ptrs, _, ints, _ = native
    key = (mod, kernel, code, ints, ctx[0], tuple(p % 16 if p else -1 for p in ptrs))
    need = _workspace_sizes.get(key)
    if need is None:
        need = getattr(mod, kernel + "_workspace")(*native, *ctx)
        if len(_workspace_sizes) >= _WORKSPACE_SIZES_MAX:
            _workspace_sizes.clear()
        _workspace_sizes[key] = need
    return need


def _run(mod, kernel: str, workspace: bool, first: torch.Tensor, native: tuple, ctx: tuple) -> None:
    """mod.kernel(*native, *ctx); a kernel with a scratch `workspace` (the CUDA modules) gets it from
    torch's allocator on the device of `first` (the call's first tensor), `workspace_size` bytes, like
    every other tensor: memory statistics, peak-memory figures, CUDA graphs (the capture's private
    pool) and allocator settings see it. It is freed on return; the caching allocator hands it out again only to later work on the same stream."""
    fn = getattr(mod, kernel)
    if not workspace:
        fn(*native, *ctx)
        return
    code, ptrs, sizes, ints, floats = native
    need = workspace_size(mod, kernel, native, ctx)
    ws = torch.empty(need, dtype=torch.uint8, device=first.device) if need else None
    fn(code, ptrs + [0 if ws is None else ws.data_ptr()], sizes + [need], ints, floats, *ctx)
