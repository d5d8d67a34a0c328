"""Benchmark core shared by ``genkernels bench`` and the pytest-benchmark suites in ``bench/``.

Every figure is a ratio measured in one run: eager PyTorch, ``torch.compile`` of the same eager
function and each genkernels backend run on the same inputs, interleaved round by round (so drift on a
noisy machine hits them all alike), timed by the median of many samples after a warm-up that also
compiles. Bandwidth is reported against a ``dst.copy_(src)`` of the case's tensor size measured the
same way in the same process.

Adding an op: write a function ``(device, quick, reference) -> list[Case]`` and decorate it with
``@register("op_name")``; build each case's implementations with :func:`standard_impls` (eager,
compile and genkernels backends, forward or forward+backward). :func:`bench_impls` benchmarks any
``{impl_name: callable}`` dict directly.
"""
from __future__ import annotations

import gc
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import torch
import torch.nn.functional as F

import genkernels
from genkernels import _native
from genkernels.backend import available_backends, use_backend

Impl = Callable[[], object]
EAGER, COMPILE = "eager", "compile"
_COPY = "\0copy"
DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16",
               torch.float64: "float64"}


# ----------------------------------------------------------------------------------------- timing
def steady_cpu_allocator() -> Optional[str]:
    """Fixes glibc's malloc in the state it adapts to by itself in a long-running process: blocks
    below 32 MiB (its largest dynamic mmap threshold on 64-bit) come from the heap and are reused,
    freed heap memory is returned to the OS only above 64 MiB; larger blocks stay fresh mmaps, as in
    any PyTorch process (so an M x K distance matrix still pays its page faults). Without this, whether
    a 16 MB output is reused or page-faulted afresh (~1 ms) depends on what the impl timed before it
    freed: measured, IQRs of 90-170% and eager adain 5.4 ms vs 16 ms run to run. Returns a
    description for the report, or None where the C library has no mallopt (not glibc)."""
    try:
        import ctypes
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    if not (mallopt(M_MMAP_THRESHOLD, 32 << 20) and mallopt(M_TRIM_THRESHOLD, 64 << 20)):
        return None
    return "glibc malloc fixed in its adapted state: heap below 32 MiB (reused), trim above 64 MiB, mmap above"


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

    @classmethod
    def of(cls, samples: Sequence[float], inner: int) -> "Timing":
        s = sorted(samples)
        q = statistics.quantiles(s, n=4) if len(s) >= 2 else [s[0], s[0], s[0]]
        return cls(statistics.median(s), q[0], q[2], s[0], len(s), inner)


def measure(impls: Dict[str, Impl], device, *, budget_s: float = 1.0, warmup: int = 3,
            min_rounds: int = 7, max_rounds: int = 400, min_sample_s: float = 2e-3,
            errors: Optional[Dict[str, str]] = None) -> Dict[str, Timing]:
    """Median seconds per call of each impl.

    Each impl is warmed up (`warmup` calls: torch.compile compiles here, outside any timed region),
    then gets an inner repeat count so that one sample lasts at least `min_sample_s`. Samples are taken
    in rounds, one per impl per round in rotating order, until `budget_s` per impl has passed (at least
    `min_rounds`, at most `max_rounds`). An impl that raises is dropped and its error stored in `errors`.
    """
    device = torch.device(device)
    inner: Dict[str, int] = {}
    live: Dict[str, Impl] = {}
    for name, fn in impls.items():
        try:
            for _ in range(warmup):
                fn()
            t = _sample(fn, device, 1)
            t = min(t, _sample(fn, device, 1))
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


_COPY_CACHE: Dict[tuple, float] = {}


def copy_bandwidth(nbytes: int, device, *, budget_s: float = 0.5, graphs: bool = False) -> float:
    """GB/s of ``dst.copy_(src)`` on `nbytes`-byte tensors (read + write counted), once per process
    per (size, device, timing mode). Per size because a small tensor may sit in the CPU's caches."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
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


# ----------------------------------------------------------------------------------- impl building
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


# ------------------------------------------------------------------------------------ cases
@dataclass
class Case:
    """One benchmark configuration of one op; `setup(names)` allocates inputs and returns impls."""
    op: str
    shape: tuple
    dtype: torch.dtype
    layout: str                      # "nchw", "channels_last", or whatever the op calls its layouts
    pass_: str                       # "fwd" or "fwd+bwd"
    device: torch.device
    bytes_moved: int                 # minimal DRAM traffic of one call
    copy_bytes: int                  # size of the copy whose bandwidth is the 100% mark
    setup: Callable[[Sequence[str]], Dict[str, Impl]]
    impl_names: List[str]
    extra: dict = field(default_factory=dict)
    peak_memory: bool = False        # also measure each impl's peak extra memory (peak_extra_bytes)
    count_launches: bool = False     # also count each impl's kernel launches per call (count_launches)

    @property
    def label(self) -> str:
        shape = "x".join(map(str, self.shape)) if isinstance(self.shape, tuple) else str(self.shape)
        return f"{self.op} {shape} {DTYPE_NAMES.get(self.dtype, str(self.dtype))} {self.layout} {self.pass_}"

    @property
    def id(self) -> str:
        return self.label.replace(" ", "-")

    def info(self) -> dict:
        return {"op": self.op, "shape": list(self.shape) if isinstance(self.shape, tuple) else self.shape,
                "dtype": DTYPE_NAMES.get(self.dtype, str(self.dtype)), "layout": self.layout,
                "pass": self.pass_, "device": str(self.device), **self.extra}


CaseFactory = Callable[[torch.device, bool, bool], List[Case]]
_REGISTRY: Dict[str, CaseFactory] = {}


def register(op: str):
    """Decorator: ``@register("adain") def cases(device, quick, reference) -> list[Case]``."""
    def deco(fn: CaseFactory) -> CaseFactory:
        _REGISTRY[op] = fn
        return fn
    return deco


def registered_ops() -> List[str]:
    return list(_REGISTRY)


def cases(op: str, device, quick: bool = False, reference: bool = False,
          dtypes: Optional[Iterable[str]] = None) -> List[Case]:
    if op not in _REGISTRY:
        raise ValueError(f"no benchmark cases registered for op {op!r}; known: {registered_ops()}")
    out = _REGISTRY[op](torch.device(device), quick, reference)
    if dtypes:
        keep = {d.strip() for d in dtypes}
        out = [c for c in out if DTYPE_NAMES.get(c.dtype, str(c.dtype)) in keep]
    return out


# ----------------------------------------------------------------------------------- results
def result_row(impl: str, median_s: float, bytes_moved: int, copy_gbps: Optional[float],
               info: Optional[dict] = None, timing: Optional[Timing] = None) -> dict:
    """The record of one (case, impl): what extra_info holds in bench/ and each JSON row here."""
    gbps = bytes_moved / median_s / 1e9 if median_s > 0 else float("nan")
    row = dict(info or {})
    row.update(impl=impl, backend=backend_of(impl), bytes_moved=int(bytes_moved), median_s=median_s,
               gbps=gbps, copy_gbps=copy_gbps,
               pct_copy=(100.0 * gbps / copy_gbps) if copy_gbps else None)
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
                copy_budget_s: float = 0.5, interleave_copy: bool = True) -> List[dict]:
    """Times every impl of one case (interleaved) and returns one result row each, with GB/s,
    % of copy bandwidth (copy of `copy_bytes`, default bytes_moved / 2; timed in the same rounds
    unless `interleave_copy` is False, then once per process and size) and speedups."""
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
    base = dict(info or {}, timing=timing_mode)
    rows = [result_row(n, t.median, bytes_moved, copy, base, t) for n, t in timings.items()]
    rows += [dict(base, impl=n, backend=backend_of(n), error=e) for n, e in errors.items()]
    return add_speedups(rows)


def run_case(case: Case, *, budget_s: float = 1.0, graphs: bool = False,
             names: Optional[Sequence[str]] = None) -> List[dict]:
    impls = case.setup(list(names or case.impl_names))
    try:
        rows = bench_impls(impls, case.bytes_moved, case.device, copy_bytes=case.copy_bytes,
                           info=dict(case.info(), case=case.label), budget_s=budget_s, graphs=graphs)
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


# ------------------------------------------------------------------------------------ launches
# Aten ops that only make views or metadata (no kernel runs).
_VIEW_OPS = {"aten::view", "aten::chunk", "aten::split", "aten::narrow", "aten::slice", "aten::as_strided",
             "aten::unsqueeze", "aten::squeeze", "aten::expand", "aten::reshape", "aten::t", "aten::transpose",
             "aten::permute", "aten::select", "aten::detach", "aten::alias", "aten::lift_fresh",
             "aten::empty", "aten::empty_like", "aten::empty_strided", "aten::unbind", "aten::movedim"}


def count_launches(fn: Impl, device) -> Optional[int]:
    """Kernels one call of `fn` runs, from the torch profiler. CUDA: device activities (kernels,
    memcpy, memset), exact. CPU: top-level aten ops other than views (eager: one kernel each), native
    genkernels calls (``genkernels::*`` ranges) and inductor's C++ kernels (visible when compiled with
    ``cpp.enable_kernel_profile``); None when a compiled region shows no kernels (not countable)."""
    from torch.profiler import ProfilerActivity, profile

    device = torch.device(device)
    fn()
    sync(device)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        fn()
        sync(device)
    events = prof.events()
    if device.type == "cuda":
        return sum(1 for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
    n, compiled_regions = 0, 0
    for e in events:
        name = e.name
        if name.startswith("genkernels::") or "cpp_fused" in name:
            n += 1
        elif e.cpu_parent is None and name.startswith("aten::") and name not in _VIEW_OPS:
            n += 1
        elif e.cpu_parent is None and name.startswith("Torch-Compiled Region"):
            compiled_regions += 1
    if compiled_regions and not any("cpp_fused" in e.name for e in events):
        return None
    return n


# ------------------------------------------------------------------------------------ peak memory
_PEAK_SCRIPT = r"""
import gc, json, sys, torch
from genkernels import benchmark as gb
op, label, impl = sys.argv[1:4]
case = next(c for c in gb.cases(op, "cpu") if c.label == label)
fn = case.setup([impl])[impl]
def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
fn(); fn(); gc.collect()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets VmHWM (peak RSS) to the current RSS
base = status("VmRSS:")
fn()
print(json.dumps(status("VmHWM:") - base))
"""


def peak_extra_bytes(case: Case, impl: str, impls: Optional[Dict[str, Impl]] = None) -> Optional[int]:
    """Memory one call of `impl` needs beyond what exists before it (inputs, warm-up caches), after
    two warm-up calls. CUDA: ``torch.cuda.max_memory_allocated`` over the call. CPU (Linux): the rise
    of the peak RSS over the call, in a fresh process (the case is rebuilt there from its op and
    label) with ``MALLOC_MMAP_THRESHOLD_=65536`` so that freed buffers leave the RSS. None if unknown."""
    if case.device.type == "cuda":
        fn = impls[impl] if impls else case.setup([impl])[impl]
        fn(); fn()
        torch.cuda.synchronize(case.device)
        base = torch.cuda.memory_allocated(case.device)
        torch.cuda.reset_peak_memory_stats(case.device)
        fn()
        torch.cuda.synchronize(case.device)
        return int(torch.cuda.max_memory_allocated(case.device) - base)
    if not sys.platform.startswith("linux"):
        return None
    import json
    import subprocess

    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    r = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, case.op, case.label, impl], capture_output=True,
                       text=True, env=env, timeout=1800)
    if r.returncode != 0:
        return None
    return int(json.loads(r.stdout.strip().splitlines()[-1]))


def _fmt_time(s: Optional[float]) -> str:
    if s is None or s != s:
        return "-"
    for unit, f in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if s >= f:
            return f"{s / f:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def _fmt(v: Optional[float], spec: str, suffix: str = "") -> str:
    return "-" if v is None or v != v else format(v, spec) + suffix


def format_table(rows: List[dict]) -> str:
    """Plain-text table: case, impl, median, GB/s, % of copy, speedups vs eager and compile."""
    head = ["case", "impl", "median", "IQR", "GB/s", "%copy", "copy GB/s", "vs eager", "vs compile"]
    peak = any(r.get("peak_extra_bytes") is not None for r in rows)
    if peak:
        head.append("peak extra")
    launches = any("launches" in r for r in rows)
    if launches:
        head.append("launches")
    lines = []
    last_case = None
    for r in rows:
        case = r.get("case", "")
        shown = case if case != last_case else ""
        last_case = case
        if "error" in r:
            lines.append([shown, r["impl"], "FAILED: " + r["error"][:60]] + [""] * (len(head) - 3))
            continue
        iqr = (100 * (r["q3_s"] - r["q1_s"]) / r["median_s"]) if r.get("q3_s") is not None else None
        lines.append([shown, r["impl"], _fmt_time(r["median_s"]), _fmt(iqr, ".0f", "%"),
                      _fmt(r["gbps"], ".1f"), _fmt(r.get("pct_copy"), ".0f", "%"),
                      _fmt(r.get("copy_gbps"), ".1f"), _fmt(r.get("speedup_vs_eager"), ".2f", "x"),
                      _fmt(r.get("speedup_vs_compile"), ".2f", "x")])
        if peak:
            mib = r.get("peak_extra_bytes")
            lines[-1].append(_fmt(None if mib is None else mib / 2**20, ".2f", " MiB"))
        if launches:
            lines[-1].append(_fmt(r.get("launches"), "d"))
    widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h) for i, h in enumerate(head)]
    fmt_line = lambda cols: "  ".join(c.ljust(w) if i < 2 else c.rjust(w)  # noqa: E731
                                      for i, (c, w) in enumerate(zip(cols, widths))).rstrip()
    out = [fmt_line(head), fmt_line(["-" * w for w in widths])]
    out += [fmt_line(l) for l in lines]
    return "\n".join(out)


# ------------------------------------------------------------------------------ environment
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def system_info(device=None) -> dict:
    """Versions, native modules, backends and device names (what `genkernels info` prints)."""
    info: dict = {"genkernels": genkernels.__version__, "torch": torch.__version__,
                  "python": sys.version.split()[0], "platform": platform.platform()}
    try:
        import triton
        info["triton"] = triton.__version__
    except Exception as e:
        info["triton"] = f"not importable ({type(e).__name__})"
    info["torch_cuda"] = torch.version.cuda
    c = _native.load("_C")
    info["cpu_isa"] = getattr(c, "isa", None) if c is not None else f"unavailable: {_native.load_error('_C')}"
    cu = _native.load("_C_cuda")
    if cu is not None:
        info["cuda_archs"] = [a for a in str(getattr(cu, "archs", "")).replace(";", ",").split(",") if a]
        info["cuda_runtime"] = getattr(cu, "runtime_version", None)
    else:
        info["cuda_archs"] = f"unavailable: {_native.load_error('_C_cuda')}"
    info["cpu"] = _cpu_model()
    info["cpu_count"] = os.cpu_count()
    info["torch_threads"] = torch.get_num_threads()
    info["cuda_available"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        d = torch.device(device) if device is not None and torch.device(device).type == "cuda" else \
            torch.device("cuda", torch.cuda.current_device())
        idx = d.index if d.index is not None else torch.cuda.current_device()
        p = torch.cuda.get_device_properties(idx)
        info["gpu"] = torch.cuda.get_device_name(idx)
        info["gpu_capability"] = f"sm_{p.major}{p.minor}"
        info["gpu_memory_gib"] = round(p.total_memory / 2**30, 1)
    info["backends"] = {"cpu": available_backends("cpu")}
    info["backends"]["cuda"] = available_backends("cuda") if torch.cuda.is_available() else []
    return info


# The per-op case definitions register themselves on import.
from . import bench_cases  # noqa: E402,F401
from . import bench_patch  # noqa: E402,F401  (genkernels.patch on diffusers models)
from . import bench_models  # noqa: E402,F401  (end-to-end model cases)
