"""attention on SD 1.5 UNet shapes: SDPA (eager) vs torch.compile of the naive form vs genkernels."""
from _harness import run_item

OP = "attention"


def test_attention(benchmark, bench_item, copy_bandwidth, bench_budget):
    run_item(benchmark, bench_item, copy_bandwidth, bench_budget)
