"""Compiles every Triton kernel that genkernels' host wrappers launch for sm_90 (Triton's GPU compiler
down to cubin with ptxas), on a machine without a GPU. Run with TRITON_INTERPRET unset (the
interpreter, which runs the kernels in CI, accepts code the GPU compiler rejects). The wrappers are
driven through the public ops on small CPU tensors of every dtype, fwd and bwd; each launch is caught
before it runs and compiled for the signature it would have had (argument types and annotations; not
Triton's value specialisations such as ints equal to 1), each distinct specialisation once, in
`--jobs` worker processes (2 by default) and a fresh Triton cache (nothing reused between runs).
By default only the CI subset (representatives: each kernel x data dtype x num_warps at its heaviest
specialisation, named in triton_sm90_subset.txt); `--full` compiles all of them and checks that the
subset still holds each group's highest register count and largest spill (`--write-subset` rewrites
the file from that run). Prints a table (CI: * for
the subset) and a summary; exit 1 on any error.

Beyond "it compiles": attention at every head-dim bucket (8..256), causal or not, and float64 for every
op (attention's Triton wrappers must refuse float64 with a ValueError: the op routes it elsewhere); the
precision of attention's products read from the TTIR and PTX (float32 data: tf32x3; 16-bit data: native
f16/bf16 mma); registers, spill stores and stack of every specialisation from ptxas's -v report of the
same compile (Triton's own n_regs / n_spills come from the CUDA driver, which needs a GPU): a spill is an
error unless KNOWN_SPILLS accepts it.
"""
import argparse
import contextlib
import io
import math
import multiprocessing
import os
import re
import sys
import tempfile
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
# Spills accepted: (kernel, data dtype, attention's BD or None) -> the largest spill stores (bytes) of
# its variants (masked, causal) at the last full run (sm_90, ptxas 13.4 bundled with triton 3.9): any
# other spill, or one past its ceiling, is an error. Only float32 attention is left (tf32x3 holds a
# high and a low part of every operand; triton/attention.py _tiles: 16x16 tiles without software
# pipelining, which cut BD = 256 from 18176 / 11712 / 1060 B to 480 / 224 / 20 B unmasked and
# non-causal; those at BD = 256 below are causal, first compiled at every BD in that run).
# SPILL_SLACK: small counts move with unrelated kernel edits (fp16 BD=32 dk/dv: 8 bytes at 255
# registers before the non-finite edit of triton/attention.py, 0 at 221 after), so a spill fails only
# past its ceiling plus this.
SPILL_SLACK = 64
KNOWN_SPILLS = {
    ("_bwd_dkdv_kernel", "fp32", 16): 32,
    ("_bwd_dkdv_kernel", "fp32", 64): 4,
    ("_bwd_dkdv_kernel", "fp32", 128): 60,
    ("_bwd_dkdv_kernel", "fp32", 256): 1692,
    ("_bwd_dq_kernel", "fp32", 64): 4,
    ("_bwd_dq_kernel", "fp32", 128): 52,
    ("_bwd_dq_kernel", "fp32", 256): 1312,
    ("_fwd_kernel", "fp32", 256): 764,
}
PTXAS_REGS = re.compile(r"Used (\d+) registers")
PTXAS_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
launches = []


def _catch(self, *args, grid, warmup, **kwargs):  # replaces JITFunction.run: record, do not launch
    launches.append((self, args, kwargs))


def signature(fn, args, kwargs):
    """(signature, constexprs, options) of a launch as triton.compile takes them."""
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
    return sig, consts, options


def spec_label(fn, sig, consts):
    """kernel, data dtype and compile-time arguments: a specialisation's row in the table."""
    dtype = next((t[1:] for t in sig.values() if t in ("*fp32", "*fp16", "*bf16", "*fp64")), "-")
    flags = ",".join(f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in consts.items()
                     if v is not None and k not in ("PREC",))
    return fn.__name__, dtype, flags


# With op_calls (d = 40, 64, 160; causal at 64): every BD bucket of triton/attention.py, causal or not
# (the causal path takes every head dim; its diagonal tiles add products, so it has its own tiles)
HEAD_DIMS = (8, 32, 128, 256)


def _head_dim_calls(dt):
    import genkernels

    def call(d, causal):
        def f():
            q, k, v = (torch.randn(1, 2, 33, d, dtype=dt, requires_grad=True) for _ in range(3))
            genkernels.attention(q, k, v, is_causal=causal).sum().backward()
        return f
    return {f"attention d={d}{' causal' * causal}": call(d, causal) for d in HEAD_DIMS for causal in (False, True)}


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
TT_DOT = re.compile(r"tt\.dot .*?(?:inputPrecision = (\w+) )?: tensor<(?:\d+x)+(\w+)> \*")


def check_precision(fn, dtype, ttir, ptx):
    """attention's products: float32 data through tf32x3 (every float32 tl.dot asks for it in the
    TTIR; the PTX has TF32 tensor-core products and the cvt.rna.tf32.f32 splits of the operands), 16-bit
    data through native f16/bf16 mma."""
    if not fn.fn.__module__.endswith("triton.attention"):
        return []
    mmas = {m.group(0).strip() for m in MMA.finditer(ptx)}
    if dtype == "fp32":
        precs = {p for p, operand in TT_DOT.findall(ttir) if operand == "f32"}
        if precs != {"tf32x3"}:
            return [f"{fn.__name__} float32: tl.dot precisions {sorted(precs)}, not tf32x3 alone"]
        if not any(".tf32.tf32" in m for m in mmas) or "cvt.rna.tf32.f32" not in ptx:
            return [f"{fn.__name__} float32: no tf32x3 products in the PTX ({sorted(mmas)[:2]})"]
    want = {"fp16": ".f16.f16", "bf16": ".bf16.bf16"}.get(dtype)
    if want and not any(want in m for m in mmas):
        return [f"{fn.__name__} {dtype}: no native {want} mma in the PTX ({sorted(mmas)[:2]})"]
    return []


def spill_key(fn, sig, consts):
    """A specialisation's KNOWN_SPILLS key: kernel, data dtype, attention's BD (None elsewhere)."""
    return spec_label(fn, sig, consts)[:2] + (consts.get("BD"),)


def compile_one(i):
    """Compiles launches[i] (a forked worker: the parent's recorded launches): (table row or None, errors)."""
    fn, args, kwargs = launches[i]
    sig, consts, options = signature(fn, args, kwargs)
    kernel, dtype, flags = spec_label(fn, sig, consts)
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):  # knobs.nvidia.dump_ptxas_log: ptxas -v's report, printed
            k = triton.compile(ASTSource(fn, sig, constexprs=consts), target=TARGET, options=options)
    except Exception as e:
        return None, [f"{kernel} {dtype} {flags}: {type(e).__name__}: {str(e)[:400]}"]
    errors = [] if k.asm.get("cubin") else [f"{kernel} {dtype}: no cubin"]
    errors += check_precision(fn, dtype, k.asm["ttir"], k.asm["ptx"])
    shared = k.metadata.shared
    if shared > MAX_SHARED:
        errors.append(f"{kernel} {dtype} {flags}: {shared} bytes of shared memory > {MAX_SHARED}")
    regs, frame = PTXAS_REGS.search(log.getvalue()), PTXAS_FRAME.search(log.getvalue())
    if not (regs and frame):
        return None, errors + [f"{kernel} {dtype} {flags}: no ptxas -v report in the compile's output"]
    row = (kernel, dtype, flags, k.metadata.num_warps, k.metadata.num_stages, int(regs.group(1)),
           int(frame.group(2)), int(frame.group(1)), shared)
    ceiling = KNOWN_SPILLS.get(spill_key(fn, sig, consts), 0)
    if row[6] > ceiling + SPILL_SLACK:
        errors.append(f"{kernel} {dtype} {flags}: spills {row[6]} bytes at {row[5]} registers "
                      f"(num_warps={row[3]}; accepted: {ceiling})")
    return row, errors


def _weight(consts):
    """(flags set, tile elements, tile extents): a specialisation with more of its code paths on and
    larger tiles compiles to more registers. Flags: True or an int 1 (CL=1); tiles: ints above 1."""
    ints = [v for v in consts.values() if type(v) in (bool, int)]
    tiles = [v for v in ints if v > 1]
    return sum(v == 1 for v in ints), math.prod(tiles), sum(tiles)


def distinct(launches):
    """Indices of the launches with distinct compile inputs (signature, constexprs, options), heavier
    first (the longest compiles start first on the workers)."""
    firsts = {}
    for i, (fn, args, kwargs) in enumerate(launches):
        sig, consts, options = signature(fn, args, kwargs)
        key = (fn.__name__, tuple(sig.items()), tuple((k, str(v)) for k, v in consts.items()),
               tuple(sorted((k, str(v)) for k, v in options.items())))
        firsts.setdefault(key, (i, _weight(consts)))
    return [i for i, _ in sorted(firsts.values(), key=lambda t: t[1], reverse=True)]


SUBSET = Path(__file__).with_name("triton_sm90_subset.txt")  # written by --full --write-subset


def group(i):
    """A launch's configuration group: kernel, data dtype, num_warps."""
    fn, args, kwargs = launches[i]
    sig, consts, options = signature(fn, args, kwargs)
    return spec_label(fn, sig, consts)[:2] + (options.get("num_warps"),)


def label(i):
    fn, args, kwargs = launches[i]
    sig, consts, _ = signature(fn, args, kwargs)
    return " ".join(spec_label(fn, sig, consts))


def representatives(todo):
    """The CI subset of `todo` (heaviest first): per group, the specialisations SUBSET names (the ones
    with the largest spill and with the most registers in the last full run); a group it does not name
    yet, its heaviest by _weight. --full checks that the subset holds every group's highest register
    count and largest spill (check_subset)."""
    named = set(SUBSET.read_text().splitlines()) if SUBSET.exists() else set()
    keep = {i for i in todo if label(i) in named}
    picked = {group(i) for i in keep}
    for i in todo:
        if group(i) not in picked:
            picked.add(group(i))
            keep.add(i)
    return [i for i in todo if i in keep]


def heaviest(results):
    """Per group, the labels of its specialisations with the largest spill and with the most registers."""
    best = {}
    for i, (row, _) in results.items():
        if row is not None:
            for key in ((row[6], row[5]), (row[5], row[6])):
                k = (group(i), key == (row[5], row[6]))
                if key > best.get(k, ((-1, -1), None))[0]:
                    best[k] = (key, label(i))
    return sorted({lab for _, lab in best.values()})


def check_subset(results, subset):
    """Errors for each group whose highest register count or largest spill (over every specialisation)
    is not reached by one in the CI subset: rerun with --full --write-subset."""
    best, covered = {}, {}
    for i, (row, _) in results.items():
        if row is None:
            continue
        for acc in [best] + [covered] * (i in subset):
            regs, spill = acc.get(group(i), (0, 0))
            acc[group(i)] = (max(regs, row[5]), max(spill, row[6]))
    errors = []
    for g, (regs, spill) in sorted(best.items(), key=str):
        have = covered.get(g, (0, 0))
        if have[0] < regs or have[1] < spill:
            errors.append(f"CI subset misses the heaviest of {g}: {regs} registers / {spill} B spill "
                          f"over all, {have[0]} / {have[1]} in the subset (--full --write-subset)")
    return errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2, help="compile worker processes")
    ap.add_argument("--full", action="store_true",
                    help="every specialisation (default: the CI subset, see representatives)")
    ap.add_argument("--write-subset", action="store_true", help=f"with --full: rewrite {SUBSET.name}")
    opts = ap.parse_args()
    if os.environ.get("TRITON_INTERPRET"):
        print("TRITON_INTERPRET is set: nothing would be compiled")
        return 2
    sys.path.insert(0, str(Path(__file__).parent))  # op_calls
    triton.knobs.nvidia.dump_ptxas_log = True
    JITFunction.run = _catch
    errors = []
    drive(errors)
    todo = distinct(launches)
    subset = representatives(todo)
    if not opts.full:
        todo = subset
    with tempfile.TemporaryDirectory() as cache:
        triton.knobs.cache.dir = cache  # a real compile (a cache hit has no ptxas report), kept by no one
        if opts.jobs > 1:
            with multiprocessing.get_context("fork").Pool(opts.jobs) as pool:
                results = dict(zip(todo, pool.map(compile_one, todo, chunksize=1)))
        else:
            results = {i: compile_one(i) for i in todo}
    rows = [row + ("*" if i in subset else "",) for i, (row, _) in results.items() if row]
    errors += [e for _, errs in results.values() for e in errs]
    if opts.full and opts.write_subset:
        SUBSET.write_text("".join(lab + "\n" for lab in heaviest(results)))
        subset = representatives(todo)
    if opts.full:
        errors += check_subset(results, set(subset))
    print(f"{'kernel':<18} {'dtype':<5} {'compile-time arguments':<70} {'warps':>5} {'stages':>6} "
          f"{'regs':>4} {'spill':>5} {'stack':>5} {'shared':>6} CI")
    for r in sorted(rows):
        print(f"{r[0]:<18} {r[1]:<5} {r[2]:<70} {r[3]:>5} {r[4]:>6} {r[5]:>4} {r[6]:>5} {r[7]:>5} {r[8]:>6} {r[9]}")
    kernels = sorted({fn.__name__ for fn, _, _ in launches})
    print(f"{len(launches)} launches, {len(kernels)} kernels, {len(rows)} specialisations compiled for "
          f"sm_{TARGET.arch} ({'all' if opts.full else 'the CI subset'}, {len(subset)} in that subset; "
          f"{opts.jobs} jobs); {len(errors)} errors")
    for e in errors:
        print("  ", e)
    return 1 if errors or not rows else 0


if __name__ == "__main__":
    sys.exit(main())
