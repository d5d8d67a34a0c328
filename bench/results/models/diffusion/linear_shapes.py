"""Every linear layer shape of the UNet step case (genkernels/bench_models.py, recorded with forward
pre-hooks on our UNet), timed three ways in thread CPU time, one thread, interleaved:
F.linear (MKL's sgemm, the weight packed on every call), oneDNN on a weight reordered once
(``mkldnn._linear_pointwise``, what genkernels.models.onednn.Linear runs) and MKL on a weight packed once
(``mkl._mkl_linear``, what inductor's freezing uses on CPU float32); plus a 1024^3 sgemm as the roof.

    OMP_NUM_THREADS=1 python bench/results/models/diffusion/linear_shapes.py
"""
import collections
import statistics
import time

import torch
import torch.nn.functional as F

from genkernels import bench_models as bm
from genkernels.backend import use_backend


def per_call(fns, rounds=5, sample_s=0.05):
    """Median thread CPU seconds per call of each fn, rounds interleaved."""
    reps = {}
    for k, f in fns.items():
        f()
        t0, n = time.thread_time(), 0
        while time.thread_time() - t0 < sample_s:
            f()
            n += 1
        reps[k] = n
    vals = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = time.thread_time()
            for _ in range(reps[k]):
                f()
            vals[k].append((time.thread_time() - t0) / reps[k])
    return {k: statistics.median(v) for k, v in vals.items()}


def main():
    torch.set_num_threads(1)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    roof = 2 * 1024 ** 3 / per_call({"mm": lambda: a @ b})["mm"] / 1e9
    print(f"1024^3 sgemm: {roof:.1f} GFLOP/s; load {open('/proc/loadavg').read().split()[:3]}")
    cfg, size, dtype = bm._unet_shape(torch.device("cpu"), loop=False)
    _, ours = bm._unet_pair(cfg, "cpu", dtype)
    x, t, ctx = bm._unet_inputs(cfg, size, "cpu", dtype)
    shapes = collections.Counter()
    hooks = [m.register_forward_pre_hook(
        lambda m, args: shapes.update([(args[0].numel() // args[0].shape[-1], m.in_features, m.out_features)]))
        for m in ours.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad(), use_backend("cpu"):
        ours(x, t, ctx)
    for h in hooks:
        h.remove()
    total = collections.Counter()
    print("calls x rows x in x out: ms (GFLOP/s) per call")
    for (M, K, N), count in sorted(shapes.items()):
        xs, w, bias = torch.randn(M, K), torch.randn(N, K), torch.randn(N)
        w_dnn = torch.ops.mkldnn._reorder_linear_weight(w, M)
        w_mkl = torch.ops.mkl._mkl_reorder_linear_weight(w, M)
        med = per_call({
            "F.linear": lambda: F.linear(xs, w, bias),
            "oneDNN": lambda: torch.ops.mkldnn._linear_pointwise(xs, w_dnn, bias, "none", [], ""),
            "MKL packed": lambda: torch.ops.mkl._mkl_linear(xs, w_mkl, w, bias, M)})
        for k, v in med.items():
            total[k] += count * v
        total["best of the three"] += count * min(med.values())
        total["oneDNN for <= 64 rows (the rule until onednn_linear_rule.py)"] += count * (med["oneDNN"] if M <= 64 else med["F.linear"])
        flop = 2 * M * K * N
        print(f"{count:3d} x {M:4d} x {K:5d} x {N:5d}: " + "  ".join(
            f"{k} {v * 1e3:6.3f} ({flop / v / 1e9:4.1f})" for k, v in med.items()))
    print("per step, ms: " + ", ".join(f"{k} {v * 1e3:.1f}" for k, v in total.items()))


if __name__ == "__main__":
    main()
