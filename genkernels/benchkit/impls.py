"""The callables a case times: eager, torch.compile of it, and each genkernels backend."""
from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Optional, Sequence

import torch

from genkernels.backend import available_backends, use_backend

from .timing import Impl

EAGER, COMPILE = "eager", "compile"


def bench_backends(device, reference: bool = False) -> List[str]:
    """genkernels backends worth timing on `device`: those available, without `reference` unless asked,
    and without `triton` on CPU (that is the interpreter, a correctness tool)."""
    dev = torch.device(device)
    out = []
    for b in available_backends(dev):
        if b == "reference" and not reference:
            continue
        if b == "triton" and dev.type == "cpu":
            continue
        out.append(b)
    return out


def impl_names(device, reference: bool = False) -> List[str]:
    return [EAGER, COMPILE] + [f"genkernels[{b}]" for b in bench_backends(device, reference)]


def backend_of(impl: str) -> str:
    if impl == EAGER:
        return "torch"
    if impl == COMPILE:
        return "inductor"
    if impl.startswith("genkernels[") and impl.endswith("]"):
        return impl[len("genkernels["):-1]
    return impl


def make_pass(fn: Callable, inputs: Sequence, grad_out: Optional[torch.Tensor] = None,
              backend: Optional[str] = None) -> Impl:
    """A zero-argument callable running ``fn(*inputs)`` (under no_grad) or, when `grad_out` is given,
    forward plus ``torch.autograd.grad`` w.r.t. every input that requires grad. autograd.grad returns
    fresh gradients instead of accumulating into ``.grad``, so rounds never add extra passes.
    `backend` wraps the whole pass (backward resolves its backend when it runs)."""
    wrt = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]

    def run_fwd():
        with torch.no_grad():
            return fn(*inputs)

    def run_bwd():
        y = fn(*inputs)
        return torch.autograd.grad(y, wrt, grad_out)

    run = run_fwd if grad_out is None else run_bwd
    if backend is None:
        return run

    def run_on_backend():
        with use_backend(backend):
            return run()
    return run_on_backend


def standard_impls(names: Iterable[str], torch_fn: Callable, gk_fn: Callable, inputs: Sequence,
                   grad_out: Optional[torch.Tensor] = None, compile_options: Optional[dict] = None) -> Dict[str, Impl]:
    """{impl: callable} for `names` from :func:`impl_names`: ``eager`` runs `torch_fn`, ``compile``
    a fresh static ``torch.compile(torch_fn)`` (dynamo is reset first, so cases never share or exhaust
    its recompile cache; `compile_options`: inductor options), ``genkernels[b]`` runs `gk_fn` on backend b."""
    out: Dict[str, Impl] = {}
    for name in names:
        if name == EAGER:
            out[name] = make_pass(torch_fn, inputs, grad_out)
        elif name == COMPILE:
            torch._dynamo.reset()
            out[name] = make_pass(torch.compile(torch_fn, dynamic=False, options=compile_options), inputs, grad_out)
        else:
            out[name] = make_pass(gk_fn, inputs, grad_out, backend=backend_of(name))
    return out
