"""vq_nearest: nearest-codebook search, time and peak extra memory (cases: genkernels/bench_cases.py).

Impls: eager matmul form (an M x K distance matrix), torch.compile of it, cdist + argmin,
vector-quantize-pytorch's layer (if installed) and each genkernels backend. ``extra_info`` also holds
``peak_extra_bytes`` (see ``genkernels.benchkit.peak_extra_bytes``).

Standalone: ``python bench/bench_vq_nearest.py [--K 1024 --D 64 --budget 3]`` prints one case's table.
"""
from __future__ import annotations

import sys

import torch

from _harness import run_item
from genkernels import benchkit as gb

OP = "vq_nearest"


def test_vq_nearest(benchmark, bench_item, copy_bandwidth, bench_budget):
    run_item(benchmark, bench_item, copy_bandwidth, bench_budget)


def main(argv=None):
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--K", type=int, default=1024)
    p.add_argument("--D", type=int, default=64)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--budget", type=float, default=3.0, help="timed seconds per impl")
    a = p.parse_args(argv)
    dev = torch.device(a.device)
    if dev.type == "cpu":
        gb.steady_cpu_allocator()
    case = next((c for c in gb.cases(OP, dev) if c.shape[1:] == (a.K, a.D)), None)
    if case is None:
        sys.exit(f"no {OP} case with K={a.K}, D={a.D} on {dev}")
    print(gb.format_table(gb.run_case(case, budget_s=a.budget)))


if __name__ == "__main__":
    main()
