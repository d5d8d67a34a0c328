"""Runs a case's impls and turns timings into result rows: GB/s, % of the roofline, speedups."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch

from .cases import Case
from .impls import COMPILE, EAGER, backend_of
from .launches import count_launches
from .memory import peak_extra_bytes
from .timing import Impl, Timing, copy_bandwidth, cuda_graphed, matmul_flop_rate, measure, paired_speedup

_COPY = "\0copy"


def result_row(impl: str, median_s: float, bytes_moved: int, copy_gbps: Optional[float],
               info: Optional[dict] = None, timing: Optional[Timing] = None,
               flop_gflops: Optional[float] = None) -> dict:
    """The record of one (case, impl): what extra_info holds in bench/ and each JSON row here.

    The roofline of a call is the larger of its two lower bounds: `bytes_moved` at copy bandwidth and,
    where `info` has ``flops`` and the matmul rate `flop_gflops` is known, its FLOPs at that rate;
    ``pct_roofline`` is that bound over the measured time and ``roofline`` names the bound."""
    gbps = bytes_moved / median_s / 1e9 if median_s > 0 else float("nan")
    row = dict(info or {})
    pct_copy = (100.0 * gbps / copy_gbps) if copy_gbps else None
    row.update(impl=impl, backend=backend_of(impl), bytes_moved=int(bytes_moved), median_s=median_s,
               gbps=gbps, copy_gbps=copy_gbps, pct_copy=pct_copy, pct_roofline=pct_copy,
               roofline="copy" if pct_copy is not None else None)
    flops = row.get("flops")
    if flops and flop_gflops and median_s > 0:
        pct_flops = 100.0 * flops / median_s / 1e9 / flop_gflops
        row.update(gflops=flops / median_s / 1e9, flop_gflops=flop_gflops, pct_flops=pct_flops)
        if pct_copy is None or pct_flops > pct_copy:
            row.update(pct_roofline=pct_flops, roofline="matmul")
    if timing is not None:
        row.update(q1_s=timing.q1, q3_s=timing.q3, min_s=timing.min, rounds=timing.rounds, inner=timing.inner)
    return row


def add_speedups(rows: List[dict]) -> List[dict]:
    """speedup_vs_eager / speedup_vs_compile within each case (rows sharing a `case` key)."""
    by_case: Dict[str, Dict[str, dict]] = {}
    for r in rows:
        by_case.setdefault(r.get("case", ""), {})[r["impl"]] = r
    for group in by_case.values():
        for r in group.values():
            for ref, key in ((EAGER, "speedup_vs_eager"), (COMPILE, "speedup_vs_compile")):
                base = group.get(ref)
                ok = base is not None and base.get("median_s") and r.get("median_s")
                r[key] = base["median_s"] / r["median_s"] if ok else None
    return rows


def bench_impls(impls: Dict[str, Impl], bytes_moved: int, device, *, copy_bytes: Optional[int] = None,
                info: Optional[dict] = None, budget_s: float = 1.0, graphs: bool = False,
                copy_budget_s: float = 0.5, interleave_copy: bool = True,
                flop_dtype: torch.dtype = torch.float32) -> List[dict]:
    """Times every impl of one case (interleaved) and returns one result row each, with GB/s,
    % of copy bandwidth (copy of `copy_bytes`, default bytes_moved / 2; timed in the same rounds
    unless `interleave_copy` is False, then once per process and size), % of the matmul FLOP rate in
    `flop_dtype` where `info` has ``flops`` (measured once per process), and speedups."""
    device = torch.device(device)
    errors: Dict[str, str] = {}
    timing_mode = "wall"
    if graphs and device.type == "cuda":
        graphed = {}
        for name, fn in impls.items():
            try:
                graphed[name] = cuda_graphed(fn)
            except Exception as e:
                errors[name] = f"cuda graph capture failed: {type(e).__name__}: {e}"[:300]
        impls, timing_mode = graphed, "cuda-graph"
    cbytes = copy_bytes if copy_bytes is not None else max(1, bytes_moved // 2)
    if interleave_copy:
        # The 100% mark is timed in the same rounds as the impls, so bursts of load from other
        # processes on a shared machine hit it alike.
        n = max(1, int(cbytes) // 4)
        src = torch.empty(n, dtype=torch.float32, device=device).uniform_()
        dst = torch.empty_like(src)
        copy_fn: Impl = lambda: dst.copy_(src)  # noqa: E731
        impls = dict(impls, **{_COPY: cuda_graphed(copy_fn) if timing_mode == "cuda-graph" else copy_fn})
    timings = measure(impls, device, budget_s=budget_s, errors=errors)
    ct = timings.pop(_COPY, None)
    errors.pop(_COPY, None)
    if ct is not None:
        copy = 2 * n * 4 / ct.median / 1e9
    else:
        copy = copy_bandwidth(cbytes, device, budget_s=copy_budget_s, graphs=timing_mode == "cuda-graph")
    flop_rate = matmul_flop_rate(device, flop_dtype) if (info or {}).get("flops") else None
    base = dict(info or {}, timing=timing_mode)
    rows = [result_row(n, t.median, bytes_moved, copy, base, t, flop_rate) for n, t in timings.items()]
    for row in rows:   # the per-round (paired) ratios beside the ratios of medians
        for ref, key in ((EAGER, "paired_vs_eager"), (COMPILE, "paired_vs_compile")):
            row[key] = paired_speedup(timings[ref], timings[row["impl"]]) if ref in timings else None
    rows += [dict(base, impl=n, backend=backend_of(n), error=e) for n, e in errors.items()]
    return add_speedups(rows)


def run_case(case: Case, *, budget_s: float = 1.0, graphs: bool = False,
             names: Optional[Sequence[str]] = None) -> List[dict]:
    impls = case.setup(list(names or case.impl_names))
    try:
        rows = bench_impls(impls, case.bytes_moved, case.device, copy_bytes=case.copy_bytes,
                           info=dict(case.info(), case=case.label), budget_s=budget_s, graphs=graphs,
                           flop_dtype=case.dtype)
        for r in rows:
            if "error" in r:
                continue
            if case.peak_memory:
                r["peak_extra_bytes"] = peak_extra_bytes(case, r["impl"], impls)
            if case.count_launches:
                r["launches"] = count_launches(impls[r["impl"]], case.device)
        return rows
    finally:
        del impls
        if case.device.type == "cuda":
            torch.cuda.empty_cache()
