"""Which 1x1 convolutions genkernels.models.onednn runs as F.linear (``_GEMM_ROWS``): every 1x1 convolution
shape of the UNet step ``genkernels bench --ops patch`` had until then (1/5 width) and of the ``--ops unet`` step (half
width) of diffusers' UNet2DConditionModel (the transformers' proj_in / proj_out, the ResNet blocks'
shortcuts), recorded with forward pre-hooks; each timed on a channels_last input as oneDNN's convolution on
a weight reordered once (the path before) and as F.linear over the pixel rows (MKL's GEMM), thread CPU
time, one thread, in the hot or cold mode of onednn_linear_rule.py. Prints per shape oneDNN/F.linear and,
per step (calls x time), all oneDNN, all F.linear and the committed rule.

    OMP_NUM_THREADS=1 python bench/results/models/diffusion/conv1x1_rule.py hot|cold [REPS]
"""
import collections
import sys

import torch
import torch.nn.functional as F
from torch import nn

from genkernels.bench_patch import LATENT, TEXT_DIM, TOKENS, sd_unet
from genkernels.models import onednn
from onednn_linear_rule import FIFTH_WIDTH, HALF_WIDTH, per_step, time_pair


def conv1x1_shapes(width):
    """{(batch, in, out, height, width): calls} of the 1x1 convolutions of one UNet step at `width`."""
    unet = sd_unet(width)
    shapes = collections.Counter()
    for m in unet.modules():
        if type(m) is nn.Conv2d and m.kernel_size == (1, 1):
            m.register_forward_pre_hook(lambda m, args: shapes.update(
                [(args[0].shape[0], m.in_channels, m.out_channels, *args[0].shape[2:])]))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        unet(torch.randn(2, 4, LATENT, LATENT, generator=g), torch.tensor(601),
             torch.randn(2, TOKENS, TEXT_DIM, generator=g))
    return shapes


def main(mode: str, reps: int):
    torch.set_num_threads(1)
    print(f"{mode}, load {open('/proc/loadavg').read().split()[:3]}; us per call")
    for width in (FIFTH_WIDTH, HALF_WIDTH):
        total = collections.Counter()
        for (n, i, o, h, w), calls in sorted(conv1x1_shapes(width).items()):
            torch.manual_seed(0)
            conv = nn.Conv2d(i, o, 1)
            x = torch.randn(n, i, h, w).contiguous(memory_format=torch.channels_last)
            geometry = ([0, 0], [1, 1], [1, 1], 1)
            wr = torch.ops.mkldnn._reorder_convolution_weight(conv.weight.detach(), *geometry, list(x.shape))
            w2, b = conv.weight.detach().reshape(o, i), conv.bias.detach()
            with torch.no_grad():
                ta, tb = time_pair(mode, lambda: torch.ops.mkldnn._convolution_pointwise(
                    x, wr, b, *geometry, "none", [], ""), lambda: F.linear(x.permute(0, 2, 3, 1), w2, b),
                    n * h * w * i * o, reps)
            gemm = n * h * w >= onednn._GEMM_ROWS
            per_step(total, calls, ta, tb, (("oneDNN", False), ("F.linear", True), ("committed rule", gemm)))
            print(f"{width} {calls:2d} x [{n}, {i:4d}, {h:2d}, {w:2d}] -> {o:4d}: oneDNN {ta:8.1f}  F.linear {tb:8.1f}"
                  f"  oneDNN/F.linear {ta / tb:4.2f}{'  F.linear' if gemm else ''}")
        print(f"{width} per step, ms: " + ", ".join(f"{k} {v:.1f}" for k, v in total.items()))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 25)
