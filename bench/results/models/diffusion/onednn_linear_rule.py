"""Which linear layers genkernels.models.onednn runs on oneDNN beyond conv_rows' rows
(``_linear_keeps_torch``; before conv_rows: which it swapped, ``left_reason``): every linear layer shape of
the UNet step ``genkernels bench --ops patch`` had until then (diffusers' UNet2DConditionModel, SD 1.5's
architecture at 1/5 width) and of the ``--ops unet`` step (half width), recorded with forward pre-hooks;
each timed as nn.Linear (F.linear: MKL's GEMM, the weight packed per call) and as oneDNN's linear on a
weight reordered once, thread CPU time, one thread. Hot: blocks of repeated calls, impls interleaved. Cold: one
call at a time after writing a 64 MB buffer (weights out of the 32 MB L3, as in a whole step). Prints per
shape torch/oneDNN and, per step (calls x time), all torch, all oneDNN, the committed rule and the rule
before it (oneDNN for at most 64 rows or 4x wider out than in).

    OMP_NUM_THREADS=1 python bench/results/models/diffusion/onednn_linear_rule.py hot|cold [REPS]
"""
import collections
import statistics
import sys
import time

import torch
from torch import nn

from genkernels.bench_patch import LATENT, TEXT_DIM, TOKENS, sd_unet
from genkernels.models import onednn

# the ``--ops patch`` step's UNet was at 1/5 width when these rules were measured (now it is the --ops unet step)
FIFTH_WIDTH, HALF_WIDTH = (64, 128, 256, 256), (160, 320, 640, 640)


def linear_shapes(width):
    """{(rows, in, out, bias): calls} of one UNet step at `width`."""
    unet = sd_unet(width)
    shapes = collections.Counter()
    for m in unet.modules():
        if type(m) is nn.Linear:
            m.register_forward_pre_hook(lambda m, args: shapes.update(
                [(args[0].numel() // args[0].shape[-1], m.in_features, m.out_features, m.bias is not None)]))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        unet(torch.randn(2, 4, LATENT, LATENT, generator=g), torch.tensor(601),
             torch.randn(2, TOKENS, TEXT_DIM, generator=g))
    return shapes


def time_pair(mode: str, fa, fb, macs: int, reps: int):
    """Median us per call of fa and fb: hot (9 interleaved blocks of calls) or cold (reps single calls)."""
    flush = torch.empty(16 * 2 ** 20) if mode == "cold" else None
    per_block = max(2, int(2e7 / macs)) if mode == "hot" else 1
    ta, tb = [], []
    for _ in range(9 if mode == "hot" else reps):
        for f, acc in ((fa, ta), (fb, tb)):
            if flush is not None:
                flush.add_(1.0)
            t0 = time.thread_time_ns()
            for _ in range(per_block):
                f()
            acc.append((time.thread_time_ns() - t0) / per_block / 1e3)
    return statistics.median(ta), statistics.median(tb)


def per_step(total: collections.Counter, calls: int, ta: float, tb: float, rules) -> None:
    """Adds a shape's ms per step (calls x us per call) to `total` under each (rule, takes b) of `rules`."""
    for rule, use_b in rules:
        total[rule] += calls * (tb if use_b else ta) / 1e3


def main(mode: str, reps: int):
    torch.set_num_threads(1)
    print(f"{mode}, load {open('/proc/loadavg').read().split()[:3]}; us per call")
    for width in (FIFTH_WIDTH, HALF_WIDTH):
        total = collections.Counter()
        for (n, i, o, bias), calls in sorted(linear_shapes(width).items()):
            torch.manual_seed(0)
            plain = nn.Linear(i, o, bias=bias)
            w = torch.ops.mkldnn._reorder_linear_weight(plain.weight.detach(), n)
            b = plain.bias.detach() if bias else None
            x = torch.randn(n, i)
            with torch.no_grad():
                ta, tb = time_pair(mode, lambda: plain(x), lambda: torch.ops.mkldnn._linear_pointwise(
                    x, w, b, "none", [], ""), n * i * o, reps)
            swapped = not onednn._linear_keeps_torch(plain)
            before = n <= 64 or o >= 4 * i
            per_step(total, calls, ta, tb, (("torch", False), ("oneDNN", True), ("committed rule", swapped),
                                            ("rule before", before)))
            print(f"{width} {calls:2d} x {n:4d} x {i:4d} -> {o:4d}{' +b' if bias else '   '}: torch {ta:8.1f}  oneDNN "
                  f"{tb:8.1f}  torch/oneDNN {ta / tb:4.2f}{'  swapped' if swapped else ''}")
        print(f"{width} per step, ms: " + ", ".join(f"{k} {v:.1f}" for k, v in total.items()))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 25)
