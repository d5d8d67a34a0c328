"""ddim_step with classifier-free guidance: eager diffusers-style step vs torch.compile vs genkernels."""
from _harness import run_item

OP = "ddim_step"


def test_ddim_step(benchmark, bench_item, copy_bandwidth, bench_budget):
    run_item(benchmark, bench_item, copy_bandwidth, bench_budget)
