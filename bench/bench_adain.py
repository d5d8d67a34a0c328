"""AdaIN on StyleGAN shapes: eager instance_norm*s+b vs torch.compile vs genkernels backends."""
from _harness import run_item

OP = "adain"


def test_adain(benchmark, bench_item, copy_bandwidth, bench_budget):
    run_item(benchmark, bench_item, copy_bandwidth, bench_budget)
