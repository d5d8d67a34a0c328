"""Up to how many output rows genkernels.models.onednn runs convolutions and linear layers on genkernels'
``conv_rows`` kernel (``_FEW_ROWS``): every Conv2d and Linear call of the ``genkernels bench --ops unet``
UNet step (half width) and the 1/5-width one ``--ops patch`` had until then of diffusers' UNet2DConditionModel with at
most 128 output rows (batch x output pixels; a linear layer's input rows), recorded with forward
pre-hooks; each timed through onednn's class on its own input, once with conv_rows and once with the
path before it (oneDNN on a reordered weight, F.linear for 1x1 convolutions and linear layers as
onednn's rules say), thread CPU time, one thread, cold (onednn_linear_rule.py's modes). Prints per shape
both times and their ratio, and per step (calls x time) the total for each candidate threshold.

    OMP_NUM_THREADS=1 python bench/results/models/diffusion/conv_rows_rule.py hot|cold [REPS]
"""
import collections
import sys

import torch
from torch import nn

from genkernels.bench_patch import LATENT, TEXT_DIM, TOKENS, sd_unet
from genkernels.models import onednn
from onednn_linear_rule import FIFTH_WIDTH, HALF_WIDTH, per_step, time_pair

THRESHOLDS = (0, 8, 16, 32, 64, 128)


def calls_of(width):
    """{(kind, rows, module geometry, input shape): (calls, module, input)} of one UNet step at `width`."""
    unet = onednn.use_onednn(sd_unet(width))
    found = {}

    def record(m, args):
        x = args[0]
        if isinstance(m, nn.Conv2d):
            rows = x.shape[0] * m._out_size(x)[0] * m._out_size(x)[1]
            key = ("conv", rows, m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], tuple(x.shape))
        else:
            rows = x.numel() // x.shape[-1]
            key = ("linear", rows, m.in_features, m.out_features, 1, 1, tuple(x.shape))
        if rows <= max(THRESHOLDS):
            calls = found[key][0] + 1 if key in found else 1
            found[key] = (calls, m, x.clone())

    for m in unet.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.register_forward_pre_hook(record)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        unet(torch.randn(2, 4, LATENT, LATENT, generator=g), torch.tensor(601),
             torch.randn(2, TOKENS, TEXT_DIM, generator=g))
    for m in unet.modules():
        m._forward_pre_hooks.clear()
    return found


def main(mode: str, reps: int):
    torch.set_num_threads(1)
    print(f"{mode}, load {open('/proc/loadavg').read().split()[:3]}; us per call; committed _FEW_ROWS = {onednn._FEW_ROWS}")
    committed = onednn._FEW_ROWS

    def at(rows_limit, m, x):
        def f():
            onednn._FEW_ROWS = rows_limit
            m(x)
        return f

    for width in (FIFTH_WIDTH, HALF_WIDTH):
        total = collections.Counter()
        for (kind, rows, i, o, k, s, shape), (calls, m, x) in sorted(calls_of(width).items()):
            with torch.no_grad():
                ta, tb = time_pair(mode, at(0, m, x), at(rows, m, x), rows * i * o * k * k, reps)
            per_step(total, calls, ta, tb, [(f"{kind} <= {t}", rows <= t) for t in THRESHOLDS])
            print(f"{width} {calls:2d} x {kind:6s} rows {rows:3d} {i:4d} -> {o:4d} k{k} s{s} {list(shape)}: "
                  f"before {ta:8.1f}  conv_rows {tb:8.1f}  before/conv_rows {ta / tb:4.2f}")
        for kind in ("conv", "linear"):
            print(f"{width} {kind} per step, ms: " + ", ".join(
                f"<= {t}: {total[f'{kind} <= {t}']:.1f}" for t in THRESHOLDS))
    onednn._FEW_ROWS = committed


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "cold", int(sys.argv[2]) if len(sys.argv) > 2 else 15)
