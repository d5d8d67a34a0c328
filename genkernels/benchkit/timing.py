"""Timing: interleaved median timing of several callables, and the two rooflines measured the same
way in the same process (copy bandwidth, matmul FLOP rate)."""
from __future__ import annotations

import gc
import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

Impl = Callable[[], object]


def sync(device) -> None:
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _sample(fn: Impl, device, inner: int) -> float:
    """Seconds per call of `inner` back-to-back calls, synchronised before and after."""
    sync(device)
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / inner


def cuda_graphed(fn: Impl, calls: int = 10) -> Impl:
    """A callable replaying `calls` captured calls of `fn` (GPU time without launch overhead); the
    timing then divides by `calls` through ``Timing.calls_per_sample``."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(calls):
            fn()
    def replay():
        g.replay()
    replay.calls_per_sample = calls  # type: ignore[attr-defined]
    replay.graph = g  # type: ignore[attr-defined]  # keeps the graph (and its memory pool) alive
    return replay


@dataclass
class Timing:
    median: float
    q1: float
    q3: float
    min: float
    rounds: int
    inner: int
    samples: Tuple[float, ...] = ()   # per call, one per round in round order (measure: every impl each round)

    @classmethod
    def of(cls, samples: Sequence[float], inner: int) -> "Timing":
        s = sorted(samples)
        q = statistics.quantiles(s, n=4) if len(s) >= 2 else [s[0], s[0], s[0]]
        return cls(statistics.median(s), q[0], q[2], s[0], len(s), inner, tuple(samples))


def paired_speedup(base: "Timing", t: "Timing") -> Optional[float]:
    """The median over rounds of base's time / t's time in the same round (None unless both have the same
    rounds): a slow stretch of a shared machine weighs on both sides of a round's ratio, unlike a ratio of
    medians."""
    if not base.samples or len(base.samples) != len(t.samples) or min(t.samples) <= 0:
        return None
    return statistics.median(b / x for b, x in zip(base.samples, t.samples))


def measure(impls: Dict[str, Impl], device, *, budget_s: float = 1.0, warmup: int = 3,
            min_rounds: int = 7, max_rounds: int = 400, min_sample_s: float = 2e-3,
            errors: Optional[Dict[str, str]] = None) -> Dict[str, Timing]:
    """Median seconds per call of each impl.

    Each impl is warmed up (`warmup` calls: torch.compile compiles here, outside any timed region),
    then gets an inner repeat count, from the fastest warm-up call after the first, so that one sample
    lasts at least `min_sample_s`. Samples are taken
    in rounds, one per impl per round in rotating order, until `budget_s` per impl has passed (at least
    `min_rounds`, at most `max_rounds`). An impl that raises is dropped and its error stored in `errors`.
    """
    device = torch.device(device)
    inner: Dict[str, int] = {}
    live: Dict[str, Impl] = {}
    for name, fn in impls.items():
        try:
            # the warm-up calls are timed (the first compiles); the fastest later one sets the inner count
            warm = [_sample(fn, device, 1) for _ in range(max(1, warmup))]
            t = min(warm[1:] or warm)
        except Exception as e:  # a broken impl must not take the whole table down
            if errors is not None:
                errors[name] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
            continue
        live[name] = fn
        inner[name] = max(1, min(10_000, math.ceil(min_sample_s / max(t, 1e-9))))
    samples: Dict[str, List[float]] = {n: [] for n in live}
    names = list(live)
    gc.collect()
    gc_was = gc.isenabled()
    gc.disable()
    try:
        t_end = time.perf_counter() + budget_s * len(names)
        r = 0
        while names and r < max_rounds and (r < min_rounds or time.perf_counter() < t_end):
            k = r % len(names)
            for n in names[k:] + names[:k]:
                samples[n].append(_sample(live[n], device, inner[n]))
            r += 1
    finally:
        if gc_was:
            gc.enable()
    out = {}
    for n in names:
        per = getattr(live[n], "calls_per_sample", 1)
        out[n] = Timing.of([s / per for s in samples[n]], inner[n])
    return out


def _device_key(device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


_COPY_CACHE: Dict[tuple, float] = {}


def copy_bandwidth(nbytes: int, device, *, budget_s: float = 0.5, graphs: bool = False) -> float:
    """GB/s of ``dst.copy_(src)`` on `nbytes`-byte tensors (read + write counted), once per process
    per (size, device, timing mode). Per size because a small tensor may sit in the CPU's caches."""
    device = _device_key(device)
    key = (int(nbytes), str(device), bool(graphs))
    if key not in _COPY_CACHE:
        n = max(1, int(nbytes) // 4)
        src = torch.empty(n, dtype=torch.float32, device=device).uniform_()
        dst = torch.empty_like(src)
        fn: Impl = lambda: dst.copy_(src)  # noqa: E731
        if graphs:
            fn = cuda_graphed(fn)
        t = measure({"copy": fn}, device, budget_s=budget_s)["copy"]
        _COPY_CACHE[key] = 2 * n * 4 / t.median / 1e9
    return _COPY_CACHE[key]


_FLOP_CACHE: Dict[tuple, float] = {}


def matmul_flop_rate(device, dtype: torch.dtype = torch.float32, *, budget_s: float = 1.0,
                     n: Optional[int] = None) -> float:
    """GFLOP/s of an n x n x n ``torch.mm`` in `dtype` (2 n^3 FLOPs; n = 8192 on CUDA, 1024 on CPU):
    the compute roofline of the FLOP-bound ops, once per process per (device, dtype), at torch's
    current thread count. From the fastest sample: a roofline is what the machine can do, and load
    from other processes only slows a sample."""
    device = _device_key(device)
    n = n or (8192 if device.type == "cuda" else 1024)
    key = (str(device), dtype, n, torch.get_num_threads())
    if key not in _FLOP_CACHE:
        g = torch.Generator().manual_seed(0)
        a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
        b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
        out = torch.empty(n, n, device=device, dtype=dtype)
        t = measure({"mm": lambda: torch.mm(a, b, out=out)}, device, budget_s=budget_s)["mm"]
        _FLOP_CACHE[key] = 2 * n ** 3 / t.min / 1e9
    return _FLOP_CACHE[key]
