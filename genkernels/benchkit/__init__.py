"""Benchmark kit shared by ``genkernels bench`` and the pytest-benchmark suites in ``bench/``.

Every figure is a ratio measured in one run: eager PyTorch, ``torch.compile`` of the same eager
function and each genkernels backend run on the same inputs, interleaved round by round (so drift on a
noisy machine hits them all alike), timed by the median of many samples after a warm-up that also
compiles. Each result is set against the roofline that bounds its op: a ``dst.copy_(src)`` of the
case's tensor size (bandwidth) and, for ops with a FLOP count, a matmul's FLOP rate, both measured in
the same process.

Adding an op: write a function ``(device, quick, reference) -> list[Case]`` in a case module listed in
:data:`cases.CASE_MODULES` and decorate it with ``@register("op_name")``; build each case's
implementations with :func:`standard_impls` (eager, compile and genkernels backends, forward or
forward+backward). :func:`bench_impls` benchmarks any ``{impl_name: callable}`` dict directly.

Modules: ``timing`` (measure, copy bandwidth, matmul FLOP rate), ``allocator`` (glibc malloc
tuning), ``impls`` (eager / compile / backend callables), ``cases`` (Case and the registry),
``launches`` (kernel launch counting), ``memory`` (peak extra memory), ``run`` (result rows),
``report`` (table and chart). System information lives in :mod:`genkernels.sysinfo`.
"""
from .allocator import steady_cpu_allocator
from .cases import DTYPE_NAMES, Case, cases, register, registered_ops
from .impls import COMPILE, EAGER, backend_of, bench_backends, impl_names, make_pass, standard_impls
from .launches import count_launches
from .memory import peak_extra_bytes
from .report import format_table, write_chart
from .run import add_speedups, bench_impls, result_row, run_case
from .timing import Impl, Timing, copy_bandwidth, cuda_graphed, matmul_flop_rate, measure, sync

__all__ = ["COMPILE", "DTYPE_NAMES", "EAGER", "Case", "Impl", "Timing", "add_speedups", "backend_of",
           "bench_backends", "bench_impls", "cases", "copy_bandwidth", "count_launches", "cuda_graphed",
           "format_table", "impl_names", "make_pass", "matmul_flop_rate", "measure", "peak_extra_bytes",
           "register", "registered_ops", "result_row", "run_case", "standard_impls", "steady_cpu_allocator",
           "sync", "write_chart"]
