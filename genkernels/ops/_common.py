"""Argument checks and layout helpers shared by the ops (errors name the bad argument)."""
from __future__ import annotations

import math
import numbers
import operator
from typing import Optional

import torch
from torch._subclasses.functional_tensor import FunctionalTensor, FunctionalTensorMode  # as triton_op

from .. import _native
from ..triton import launch as triton_launch
from .._torch_private import probes as _probes

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation / statistics dtype: float64 for float64 data, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_tensor(op: str, name: str, t, *, min_dim: int = 0, dtypes=FLOAT_DTYPES):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: `{name}` must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        raise TypeError(f"{op}: `{name}` has dtype {t.dtype}; expected one of "
                        f"{', '.join(str(d).replace('torch.', '') for d in dtypes)}")
    if t.dim() < min_dim:
        raise ValueError(f"{op}: `{name}` must have at least {min_dim} dims, got shape {tuple(t.shape)}")


def check_param(op: str, name: str, t: Optional[torch.Tensor], shape, device: torch.device):
    """An optional parameter tensor: floating, of exactly `shape` (a tuple), on `device`."""
    if t is None:
        return
    check_tensor(op, name, t)
    if t.shape != shape:
        raise ValueError(f"{op}: `{name}` must have shape {tuple(shape)}, got {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"{op}: `{name}` is on {t.device} but the input is on {device}")


def as_float(op: str, name: str, v, *, allow_none: bool = False) -> Optional[float]:
    """A public real argument (a Python or numpy real number) as the float the registered op takes;
    its value is checked with the registered op's arguments."""
    if v is None and allow_none:
        return None
    if type(v) is float:
        return v
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{op}: `{name}` must be a float{' or None' if allow_none else ''}, got {type(v).__name__}")
    return float(v)


def check_eps(op: str, eps: float) -> None:
    """eps (a float: the schema's type, as_float on the public path) must be finite and >= 0."""
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"{op}: `eps` must be finite and >= 0, got {eps}")


def is_channels_last(x: torch.Tensor) -> bool:
    """True when x [N, C, *spatial] is densely packed as [N, *spatial, C] (and not also NCHW-contiguous)."""
    if x.dim() < 3 or x.is_contiguous():
        return False
    return x.movedim(1, -1).is_contiguous()


def dense_layout(x: torch.Tensor):
    """(x densely packed in NC* or N*C order, channels_last flag). Copies only for other strides."""
    if x.is_contiguous():
        return x, False
    if is_channels_last(x):
        return x, True
    return x.contiguous(), False


def empty_out(x: torch.Tensor) -> torch.Tensor:
    """An output for the kernels' result of x: x's strides when x is densely packed in NC* or N*C order
    (dense_layout keeps it), contiguous otherwise (dense_layout copies it). The real ops and their fake
    implementations both allocate with it, so torch.compile sees the strides the op returns."""
    if x.is_contiguous() or is_channels_last(x):
        return torch.empty_like(x)
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)


def to_layout(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """t (same shape as the reference tensor) in the given dense layout."""
    if channels_last:
        return t if is_channels_last(t) else t.movedim(1, -1).contiguous().movedim(-1, 1)
    return t.contiguous()


def param(t: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    """A parameter as the kernels read it: contiguous, in the accumulation dtype."""
    if t is None or (t.dtype == dtype and t.is_contiguous()):  # (the common case, without two calls)
        return t
    return t.to(dtype).contiguous()


def launch(backend: str, args, dtype: torch.dtype) -> None:
    """Runs the kernel of `args` (a NamedTuple of ops/_kernels.py: the kernel's arguments by name) on a
    compiled backend, for data of `dtype`. Native and Triton kernels take the same arguments in the
    same order. Kernels read raw memory: no tensor may be a lazily negated view (``Op`` sends those
    through the dispatcher, which resolves them). Triton launches on the current CUDA device, so its
    kernels run with the tensors' device made current (the native CUDA kernels set it themselves)."""
    if backend == "triton":
        import importlib

        fn = getattr(importlib.import_module(f"genkernels.triton.{args.FAMILY}"), args.KERNEL)
        device = args[0].device
        if isinstance(args[0], FunctionalTensor):  # torch.compile tracing the op (Op.decompose): record
            with triton_launch.traced():
                fn(*args)
        elif device.type == "cuda":
            with torch.cuda.device(device):
                fn(*args)
        else:  # TRITON_INTERPRET=1 on CPU tensors
            fn(*args)
    else:
        _native.call(args, dtype)


_is_compiling = torch.compiler.is_compiling  # (bound once: plain_eager runs on every eager call)


# Tensors without their own __torch_function__/__torch_dispatch__ (nn.Parameter disables its own): the
# eager fast path runs them as they are; any other tensor type goes through the dispatcher.
PLAIN_TENSORS = frozenset((torch.Tensor, torch.nn.Parameter))


# (module globals: watched runs on every eager call; where this torch lacks a probe, every call is
# watched, i.e. goes through the dispatcher)
_dispatch_modes, _function_modes, _functorch_active, _jit_tracing = \
    _probes[:4] if _probes is not None else (lambda: True,) * 4


def watched() -> bool:
    """True when a compiler, tracer, vmap or dispatch/function mode watches eager calls."""
    # is_compiling first: under dynamo it is the constant True and nothing after it is traced
    return _is_compiling() or _dispatch_modes() or _function_modes() or _functorch_active() or _jit_tracing()


def plain_eager(*tensors) -> bool:
    """True when a public op may run its implementation without going through the dispatcher (which
    costs about as much as a cache-resident kernel): plain tensors, and nothing watching (`watched`).
    Same result either way."""
    return not watched() and _scan(tensors)[0]


def under_functorch() -> bool:
    """True inside torch.func transforms (grad, vmap, jvp, ...). The registered ops' autograd is not
    composable with them, so the public functions then run their differentiable reference formula
    (the same results; functorch transforms it like any PyTorch code)."""
    return not _is_compiling() and _functorch_active()


def needs_grad(*tensors) -> bool:
    """True when autograd records a call on these tensors."""
    return torch.is_grad_enabled() and _scan(tensors)[1]


class Op:
    """How every public op runs, the same way for all six: the public function converts its arguments
    to the registered op's (defaults, Python/numpy numbers, strings to flags) and calls its Op with
    them. `check` checks the registered op's arguments (a ValueError/TypeError naming the bad one);
    every path below runs it exactly once per call:
      - plain eager (as plain_eager: nothing `watched`, only plain tensors, see _scan): `check`, then `impl`
        directly, or, when autograd records the call, `impl` inside a torch.autograd.Function whose
        context and backward are the registered op's own `setup_context` / `backward` (so both paths
        run the same forward and backward functions);
      - inside torch.func transforms: `check`, then `reference`, the differentiable formula (a backward
        op has none: the forward ran its reference there);
      - otherwise (torch.compile, tracing, modes, tensor subclasses): the registered op `registered`
        through the dispatcher, whose implementation and fake implementation run `check` first
        (so does `torch.ops.genkernels.<op>` called directly).
    `impl` resolves the backend and runs it; it does not check its arguments. `name` names the eager
    autograd node (``<name>_eagerBackward``). `backend` (the registered op's arguments -> the backend
    `impl` will run): see `decompose`."""

    def __init__(self, name, registered, check, impl, reference=None, setup_context=None, backward=None,
                 backend=None):
        self.registered, self.check, self.impl, self.reference, self.backend = \
            registered, check, impl, reference, backend
        self.function = None
        self.tensors = _tensor_arguments(registered)
        if backend is not None:
            registered.register_torch_dispatch(FunctionalTensorMode, self.decompose)
        if backward is not None:
            registered.register_autograd(backward, setup_context=setup_context)

            def forward(ctx, *inputs):
                out = impl(*inputs)
                setup_context(ctx, inputs, out)
                return out

            self.function = type(f"{name}_eager", (torch.autograd.Function,),
                                 {"forward": staticmethod(forward), "backward": staticmethod(backward)})

    def decompose(self, mode, func, types, args, kwargs):
        """The registered op under torch.compile's functional tracing (AOTAutograd): where it would run
        its Triton kernels on CUDA tensors, `impl` itself is traced and its launches recorded through
        torch.library.wrap_triton (ops/_common.launch), so the compiler sees the kernels, as
        torch.library.triton_op does for an op that is only Triton; other backends (native kernels,
        which fake tensors cannot run) stay one opaque call. torch.export keeps the op whole."""
        device = next(t.device for t in args if isinstance(t, torch.Tensor))
        if device.type == "cuda" and self.backend(*args, **kwargs) == "triton" \
                and not _export_keeps_triton_ops():
            self.check(*args, **kwargs)  # (the other branch reaches the fake implementation, which checks)
            with mode:
                return self.impl(*args, **kwargs)
        return mode.__torch_dispatch__(func, types, args, kwargs)

    def __call__(self, *inputs):
        if not watched():
            plain, grad = _scan(self.tensors(inputs))
            if plain:  # plain_eager, in the one pass over the inputs that also finds needs_grad
                self.check(*inputs)
                if self.function is not None and grad and torch.is_grad_enabled():
                    return self.function.apply(*inputs)
                return self.impl(*inputs)
        if self.reference is not None and under_functorch():
            self.check(*inputs)
            return self.reference(*inputs)
        return self.registered(*inputs)


_NOT_TENSORS = frozenset((type(None), bool, int, float, str))  # (isinstance(v, Tensor) is slow for these)


def _scan(inputs) -> tuple:
    """(every input tensor is plain, an input tensor requires grad): one pass for Op.__call__,
    plain_eager and needs_grad. Plain: of PLAIN_TENSORS and not a lazily negated view (e.g.
    ``complex.conj().imag``): the kernels read raw memory, and the dispatcher resolves such views for
    a registered op, so they take its path."""
    plain, grad = True, False
    for t in inputs:
        if t is None:
            continue
        kind = type(t)
        if kind in PLAIN_TENSORS:
            if t.is_neg():
                plain = False
            grad = grad or t.requires_grad
        elif kind not in _NOT_TENSORS and isinstance(t, torch.Tensor):
            plain, grad = False, grad or t.requires_grad
    return plain, grad


def _tensor_arguments(registered):
    """A function of the registered op's arguments -> the tuple of those its schema types as tensors
    (the ones Op.__call__ scans)."""
    where = [i for i, a in enumerate(registered._opoverload._schema.arguments)
             if str(a.type) in ("Tensor", "Optional[Tensor]")]
    return operator.itemgetter(*where) if len(where) > 1 else lambda inputs: tuple(inputs[i] for i in where)


def _export_keeps_triton_ops() -> bool:
    """torch.export serialises custom ops, not Triton kernels (torch.library.triton_op checks the same)."""
    from torch.export._trace import custom_triton_ops_decomposition_disabled

    return custom_triton_ops_decomposition_disabled()
