"""group_norm_silu: eager F.silu(F.group_norm) vs torch.compile of it vs each genkernels backend,
forward and forward+backward, NCHW and channels_last (cases: genkernels/bench_cases.py)."""
from _harness import run_item

OP = "group_norm_silu"


def test_group_norm_silu(benchmark, bench_item, copy_bandwidth, bench_budget):
    run_item(benchmark, bench_item, copy_bandwidth, bench_budget)
