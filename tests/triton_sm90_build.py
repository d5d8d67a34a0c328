"""Compiles every Triton kernel that genkernels' host wrappers launch for sm_90 (Triton's GPU compiler
down to cubin with ptxas), on a machine without a GPU. Run with TRITON_INTERPRET unset (the
interpreter, which runs the kernels in CI, accepts code the GPU compiler rejects). The wrappers are
driven through the public ops on small CPU tensors of every dtype, fwd and bwd; each launch is caught
before it runs and compiled for the signature it would have had (argument types and annotations; not
Triton's value specialisations such as ints equal to 1). Prints a summary; exit 1 on any error.

Beyond "it compiles": attention at every head-dim bucket (8..256) and float64 for every op (attention's
Triton wrappers must refuse float64 with a ValueError: the op routes it elsewhere); the precision of
attention's products read from the PTX (float32 data: no TF32 mma; 16-bit data: native f16/bf16 mma).
"""
import re
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


HEAD_DIMS = (8, 32, 128, 256)  # with op_calls (d = 40, 64, 160): every BD bucket of triton/attention.py


def _head_dim_calls(dt):
    import genkernels

    def call(d):
        def f():
            q, k, v = (torch.randn(1, 2, 33, d, dtype=dt, requires_grad=True) for _ in range(3))
            genkernels.attention(q, k, v).sum().backward()
        return f
    return {f"attention d={d}": call(d) for d in HEAD_DIMS}


def drive(errors):
    import genkernels
    import genkernels.backend as backend
    from op_calls import op_calls

    backend.backend_error = lambda name, device: None  # let the triton backend take CPU tensors
    with genkernels.use_backend("triton"):
        for dt in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
            calls = op_calls("cpu", dt)
            if dt != torch.float64:
                calls.update(_head_dim_calls(dt))
            for name, f in calls.items():
                refuse = dt == torch.float64 and name.startswith("attention")
                try:
                    f()
                except ValueError as e:
                    if not (refuse and "float64" in str(e)):
                        errors.append(f"host side of {name} {dt}: ValueError: {e}")
                except Exception as e:
                    errors.append(f"host side of {name} {dt}: {type(e).__name__}: {e}")
                else:
                    if refuse:
                        errors.append(f"{name} {dt}: the triton backend accepted float64")


MMA = re.compile(r"^\s*(wgmma|mma)\S*", re.M)


def check_precision(fn, args, ptx, errors):
    """attention's products: no TF32 for float32 data, native 16-bit operands for half types."""
    if not fn.fn.__module__.endswith("triton.attention"):
        return
    dt = args[0].dtype
    mmas = {m.group(0).strip() for m in MMA.finditer(ptx)}
    if dt == torch.float32 and any("tf32" in m for m in mmas):
        errors.append(f"{fn.__name__} float32: TF32 tensor-core products {sorted(mmas)[:2]}")
    want = {torch.float16: ".f16.f16", torch.bfloat16: ".bf16.bf16"}.get(dt)
    if want and not any(want in m for m in mmas):
        errors.append(f"{fn.__name__} {dt}: no native {want} mma in the PTX ({sorted(mmas)[:2]})")


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
        check_precision(fn, args, k.asm["ptx"], errors)
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
