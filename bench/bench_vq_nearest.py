"""vq_nearest: nearest-codebook search, time and peak memory.

Impls of each case (z [M, D], codebook [K, D]; M = 16 x 32 x 32 = 16384 tokens):

    eager                     matmul form  d = ||z||^2 - 2 z e^T + ||e||^2;  d.argmin(1)   (M x K matrix)
    compile                   torch.compile of that function
    cdist                     torch.cdist(z, e).argmin(1)
    vector-quantize-pytorch   VectorQuantize(dim=D, codebook_size=K) forward, eval mode, no grad (a whole
                              quantizer layer: its own cdist + argmax + gather; only if installed)
    genkernels[b]             genkernels vq_nearest on backend b (indices + min_sq_dist)

Cases: K in {512, 1024, 8192, 16384} x D in {4, 64, 256}, float32 (+ float16/bfloat16 on CUDA). On
CPU the two largest (K >= 8192 with D = 256: 34 / 69 GMAC per call, minutes per impl) are left out.
``--bench-quick``: the headline case K = 1024, D = 64.

Peak memory: ``extra_info["peak_extra_bytes"]`` is the memory an impl needs beyond its inputs, for one
call after warm-up. CUDA: ``torch.cuda.max_memory_allocated`` over the call. CPU: the rise of the
process's peak RSS (``VmHWM`` after resetting it through ``/proc/self/clear_refs``) over the call, in a
fresh subprocess per case with ``MALLOC_MMAP_THRESHOLD_=65536`` so that freed buffers leave the RSS
(Linux only; elsewhere the field is absent).

Standalone (no pytest): ``python bench/bench_vq_nearest.py [--K 1024 --D 64 --budget 3]`` prints the
table of one case with memory.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Dict, List

import torch

from genkernels import benchmark as gb
from genkernels.ops.vq_nearest import vq_nearest

OP = "vq_nearest"
M_TOKENS = 16 * 32 * 32
KS = (512, 1024, 8192, 16384)
DS = (4, 64, 256)
CDIST, VQP = "cdist", "vector-quantize-pytorch"
_HERE = Path(__file__).resolve().parent


def _matmul_form(z, e):
    d = z.square().sum(1, keepdim=True) - 2 * (z @ e.t()) + e.square().sum(1)
    return d.argmin(1)


def _cdist_argmin(z, e):
    return torch.cdist(z, e).argmin(1)


def _have_vqp() -> bool:
    try:
        import vector_quantize_pytorch  # noqa: F401
    except Exception:
        return False
    return True


def impl_names(device, reference: bool = False) -> List[str]:
    names = [gb.EAGER, gb.COMPILE, CDIST] + ([VQP] if _have_vqp() else [])
    return names + [f"genkernels[{b}]" for b in gb.bench_backends(device, reference)]


def build_impls(names, M, K, D, dtype, device) -> Dict[str, gb.Impl]:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(M, D, generator=g).to(device=device, dtype=dtype)
    e = torch.randn(K, D, generator=g).to(device=device, dtype=dtype)
    out: Dict[str, gb.Impl] = {}
    for name in names:
        if name in (gb.EAGER, gb.COMPILE):
            out.update(gb.standard_impls([name], _matmul_form, None, (z, e)))
        elif name == CDIST:
            out[name] = gb.make_pass(_cdist_argmin, (z, e))
        elif name == VQP:
            from vector_quantize_pytorch import VectorQuantize

            vq = VectorQuantize(dim=D, codebook_size=K).to(device=device, dtype=dtype).eval()
            with torch.no_grad():
                vq._codebook.embed.copy_(e[None])
            x = z[None]
            out[name] = gb.make_pass(lambda x: vq(x), (x,))
        else:
            out[name] = gb.make_pass(lambda z, e: vq_nearest(z, e), (z, e), backend=gb.backend_of(name))
    return out


@gb.register(OP)
def vq_cases(device: torch.device, quick: bool, reference: bool) -> List[gb.Case]:
    if device.type == "cuda":
        dtypes = [torch.float32, torch.float16, torch.bfloat16]
        shapes = [(K, D) for K in KS for D in DS]
    else:
        dtypes = [torch.float32]
        shapes = [(K, D) for K in KS for D in DS if not (K >= 8192 and D == 256)]
    if quick:
        dtypes, shapes = dtypes[:1], [(1024, 64)]
    names = impl_names(device, reference)
    cases = []
    for dtype in dtypes:
        es = torch.empty((), dtype=dtype).element_size()
        for K, D in shapes:
            M = M_TOKENS
            nbytes = (M + K) * D * es + M * (8 + 4)  # read z, codebook; write indices, distances
            cases.append(gb.Case(OP, (M, K, D), dtype, "rows", "fwd", device, nbytes, M * D * es,
                                 _setup(M, K, D, dtype, device), names,
                                 {"M": M, "K": K, "D": D, "flops": 2 * M * K * D}))
    return cases


def _setup(M, K, D, dtype, device):
    def setup(names):
        return build_impls(names, M, K, D, dtype, device)
    return setup


# ------------------------------------------------------------------------------------- peak memory
_MEM_SCRIPT = r"""
import gc, json, sys, torch
sys.path.insert(0, sys.argv[1])
import bench_vq_nearest as b
M, K, D = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
dtype = getattr(torch, sys.argv[5]); names = sys.argv[6].split(",")
def rss(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
out = {}
for name in names:
    fn = b.build_impls([name], M, K, D, dtype, torch.device("cpu"))[name]
    try:
        fn(); fn(); gc.collect()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = rss("VmRSS:")
        fn()
        out[name] = rss("VmHWM:") - base
    except Exception as e:
        out[name] = None
    del fn; gc.collect()
print(json.dumps(out))
"""


@lru_cache(maxsize=None)
def _cpu_peaks(M, K, D, dtype_name, names) -> Dict[str, int]:
    if not sys.platform.startswith("linux"):
        return {}
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    r = subprocess.run([sys.executable, "-c", _MEM_SCRIPT, str(_HERE), str(M), str(K), str(D), dtype_name,
                        ",".join(names)], capture_output=True, text=True, env=env, timeout=1800)
    if r.returncode != 0:
        return {}
    return json.loads(r.stdout.strip().splitlines()[-1])


def peak_extra_bytes(case: gb.Case, impl: str, impls: Dict[str, gb.Impl] = None):
    M, K, D = case.shape
    if case.device.type == "cuda":
        fn = impls[impl] if impls else build_impls([impl], M, K, D, case.dtype, case.device)[impl]
        fn()
        torch.cuda.synchronize(case.device)
        base = torch.cuda.memory_allocated(case.device)
        torch.cuda.reset_peak_memory_stats(case.device)
        fn()
        torch.cuda.synchronize(case.device)
        return torch.cuda.max_memory_allocated(case.device) - base
    peaks = _cpu_peaks(M, K, D, gb.DTYPE_NAMES[case.dtype], tuple(case.impl_names))
    return peaks.get(impl)


# ------------------------------------------------------------------------------------- pytest
def test_vq_nearest(benchmark, bench_item, copy_bandwidth, bench_budget):
    from _harness import RESULTS, run_item

    row = run_item(benchmark, bench_item, copy_bandwidth, bench_budget)
    if row is None:
        return
    peak = peak_extra_bytes(bench_item.case, bench_item.impl)
    if peak is not None:
        benchmark.extra_info["peak_extra_bytes"] = int(peak)
        for r in reversed(RESULTS):
            if r is row or (r.get("case") == row.get("case") and r.get("impl") == row.get("impl")):
                r["peak_extra_bytes"] = int(peak)
                break


# ------------------------------------------------------------------------------------- standalone
def main(argv=None):
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--K", type=int, default=1024)
    p.add_argument("--D", type=int, default=64)
    p.add_argument("--M", type=int, default=M_TOKENS)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--budget", type=float, default=3.0, help="timed seconds per impl")
    p.add_argument("--no-memory", action="store_true")
    a = p.parse_args(argv)
    dev = torch.device(a.device)
    dtype = getattr(torch, a.dtype)
    names = impl_names(dev)
    impls = build_impls(names, a.M, a.K, a.D, dtype, dev)
    case = gb.Case(OP, (a.M, a.K, a.D), dtype, "rows", "fwd", dev, 0, 0, lambda n: impls, names)
    timings = gb.measure(impls, dev, budget_s=a.budget, max_rounds=1000)
    mk = a.M * a.K * 4
    print(f"{OP} M={a.M} K={a.K} D={a.D} {a.dtype} on {dev} ({torch.get_num_threads()} threads); "
          f"an M x K float32 matrix is {mk / 2**20:.0f} MiB")
    print(f"{'impl':26s} {'median':>10s} {'min':>10s} {'rounds':>6s} {'vs compile':>10s} {'vs cdist':>9s} "
          f"{'peak extra':>11s}")
    for name, t in timings.items():
        peak = None if a.no_memory else peak_extra_bytes(case, name, impls)
        rc = timings[gb.COMPILE].median / t.median if gb.COMPILE in timings else math.nan
        rd = timings[CDIST].median / t.median if CDIST in timings else math.nan
        ps = "-" if peak is None else f"{peak / 2**20:.2f} MiB"
        print(f"{name:26s} {t.median * 1e3:8.2f}ms {t.min * 1e3:8.2f}ms {t.rounds:6d} {rc:9.2f}x {rd:8.2f}x {ps:>11s}")


if __name__ == "__main__":
    sys.path.insert(0, str(_HERE))
    main()
