"""Helpers shared by the pytest-benchmark suites (bench/bench_<op>.py).

The timing/bandwidth core lives in ``genkernels.benchkit`` (also used by ``genkernels bench``);
this module adapts it to pytest-benchmark: one test per (case, impl), timed with
``benchmark.pedantic``, the figures recorded in ``benchmark.extra_info``.

A new op needs its cases registered in ``genkernels/bench_cases.py`` (``@register("op")``) and a
three-line bench file::

    OP = "adain"

    def test_adain(benchmark, bench_item, copy_bandwidth, bench_budget):
        run_item(benchmark, bench_item, copy_bandwidth, bench_budget)

Anything else (a one-off comparison) can call :func:`run_impl` with its own ``{impl: callable}``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch

from genkernels import benchkit as gb

# Result rows of this session, for the summary table printed at the end (conftest.py).
RESULTS: List[dict] = []


@dataclass(frozen=True)
class BenchItem:
    case: gb.Case
    impl: str

    @property
    def id(self) -> str:
        return f"{self.case.id}-{self.impl}"


def bench_items(op: str, device, quick: bool = False, reference: bool = False,
                dtypes: Optional[List[str]] = None) -> List[BenchItem]:
    return [BenchItem(c, n) for c in gb.cases(op, device, quick, reference, dtypes) for n in c.impl_names]


def run_impl(benchmark, impls: Dict[str, Callable[[], object]], impl: str, bytes_moved: int, device,
             copy_gbps: Optional[float], info: Optional[dict] = None, budget_s: float = 0.5,
             warmup_calls: int = 3, group: Optional[str] = None) -> Optional[dict]:
    """Benchmarks ``impls[impl]`` with ``benchmark.pedantic`` and records the figures in extra_info.

    The callable is warmed up first, outside the timed region (torch.compile compiles there); on CUDA
    the timed function synchronises after each call. Rounds are sized to take about `budget_s`.
    """
    device = torch.device(device)
    fn = impls[impl]
    for _ in range(warmup_calls):
        fn()
    gb.sync(device)
    calib = []
    for _ in range(5):                                           # median: one lucky call must not
        t0 = time.perf_counter()                                 # size 1000 rounds of a slow impl
        fn()
        gb.sync(device)
        calib.append(time.perf_counter() - t0)
    t = max(sorted(calib)[2], 1e-7)

    if device.type == "cuda":
        def target():
            fn()
            torch.cuda.synchronize(device)
    else:
        target = fn
    iterations = max(1, min(1000, math.ceil(1e-3 / t)))        # >= ~1 ms per round: timer noise
    rounds = max(7, min(200, int(budget_s / (t * iterations))))
    if group:
        benchmark.group = group
    benchmark.pedantic(target, rounds=rounds, iterations=iterations, warmup_rounds=2)
    if benchmark.stats is None:                                  # --benchmark-disable
        return None
    st = benchmark.stats.stats
    timing = gb.Timing(st.median, st.q1, st.q3, st.min, st.rounds, iterations)
    row = gb.result_row(impl, st.median, bytes_moved, copy_gbps, info, timing)
    benchmark.extra_info.update(row)
    RESULTS.append(row)
    return row


def run_item(benchmark, item: BenchItem, copy_bandwidth: Callable[[int, torch.device], float],
             budget_s: float = 0.5) -> Optional[dict]:
    """Benchmarks one registered (case, impl)."""
    case = item.case
    impls = case.setup([item.impl])
    copy = copy_bandwidth(case.copy_bytes, case.device)
    try:
        row = run_impl(benchmark, impls, item.impl, case.bytes_moved, case.device, copy,
                       info=dict(case.info(), case=case.label), budget_s=budget_s, group=case.label)
        if row is not None and case.peak_memory:
            peak = gb.peak_extra_bytes(case, item.impl, impls)
            benchmark.extra_info["peak_extra_bytes"] = row["peak_extra_bytes"] = peak
        return row
    finally:
        del impls
        if case.device.type == "cuda":
            torch.cuda.empty_cache()
