"""Compiles every Triton kernel that genkernels' host wrappers launch for sm_90 (Triton's GPU compiler
down to cubin with ptxas), on a machine without a GPU. Run with TRITON_INTERPRET unset (the
interpreter, which runs the kernels in CI, accepts code the GPU compiler rejects). The wrappers are
driven through the public ops on small CPU tensors of every dtype, fwd and bwd; each launch is caught
before it runs and compiled for the signature it would have had (argument types and annotations; not
Triton's value specialisations such as ints equal to 1). Prints a summary; exit 1 on any error.
"""
import os
import sys
from pathlib import Path

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.jit import JITFunction

TARGET = GPUTarget("cuda", 90, 32)
MAX_SHARED = 227 * 1024  # per block on sm_90
TYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64",
         torch.int64: "i64", torch.int32: "i32", torch.uint8: "u8", torch.bool: "i1"}
launches = []


def _catch(self, *args, grid, warmup, **kwargs):  # replaces JITFunction.run: record, do not launch
    launches.append((self, args, kwargs))


def build(fn, args, kwargs):
    bound = dict(zip(fn.arg_names, args))
    bound.update({k: v for k, v in kwargs.items() if k in fn.arg_names})
    options = {k: v for k, v in kwargs.items() if k not in fn.arg_names}  # num_warps, num_stages
    sig, consts = {}, {}
    for p in fn.params:
        v = bound.get(p.name)
        if p.is_constexpr or v is None:
            sig[p.name], consts[p.name] = "constexpr", v
        elif isinstance(v, torch.Tensor):
            sig[p.name] = "*" + TYPES[v.dtype]
        elif p.annotation_type:  # e.g. `eta: tl.float64`
            sig[p.name] = p.annotation_type
        elif isinstance(v, bool):
            sig[p.name] = "i1"
        elif isinstance(v, int):
            sig[p.name] = "i64" if abs(v) >= 2**31 else "i32"
        elif isinstance(v, float):
            sig[p.name] = "fp32"
        else:
            raise TypeError(f"{fn.__name__}: argument {p.name} has type {type(v).__name__}")
    return triton.compile(ASTSource(fn, sig, constexprs=consts), target=TARGET, options=options)


def drive(errors):
    import genkernels
    import genkernels.backend as backend
    from op_calls import op_calls

    backend.backend_error = lambda name, device: None  # let the triton backend take CPU tensors
    with genkernels.use_backend("triton"):
        for dt in (torch.float32, torch.float16, torch.bfloat16):
            for name, f in op_calls("cpu", dt).items():
                try:
                    f()
                except Exception as e:
                    errors.append(f"host side of {name} {dt}: {type(e).__name__}: {e}")


def main() -> int:
    if os.environ.get("TRITON_INTERPRET"):
        print("TRITON_INTERPRET is set: nothing would be compiled")
        return 2
    sys.path.insert(0, str(Path(__file__).parent))  # op_calls
    JITFunction.run = _catch
    errors = []
    drive(errors)
    seen, built = set(), 0
    for fn, args, kwargs in launches:
        key = (fn.__name__, tuple((type(a).__name__, getattr(a, "dtype", None),
                                   a if isinstance(a, bool) else None) for a in args),
               tuple(sorted((k, str(v)) for k, v in kwargs.items())))
        if key in seen:
            continue
        seen.add(key)
        try:
            k = build(fn, args, kwargs)
        except Exception as e:
            errors.append(f"{fn.__name__}: {type(e).__name__}: {str(e)[:400]}")
            continue
        built += 1
        if not k.asm.get("cubin"):
            errors.append(f"{fn.__name__}: no cubin")
        if k.metadata.shared > MAX_SHARED:
            errors.append(f"{fn.__name__}: {k.metadata.shared} bytes of shared memory > {MAX_SHARED}")
    kernels = sorted({fn.__name__ for fn, _, _ in launches})
    print(f"{len(launches)} launches, {len(kernels)} kernels, {built} specialisations compiled for "
          f"sm_{TARGET.arch}; {len(errors)} errors")
    for e in errors:
        print("  ", e)
    return 1 if errors or not built else 0


if __name__ == "__main__":
    sys.exit(main())
