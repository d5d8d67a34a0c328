"""Thread CPU time (``time.thread_time``: time the process is descheduled on a loaded machine is not
counted) of the ``genkernels bench --ops unet`` cases (genkernels/bench_models.py), impls interleaved,
one thread; the step case also with ``genkernels.patch`` of diffusers' UNet (the same weights).
``patch_step``: the UNet step of ``genkernels bench --ops patch`` (genkernels/bench_patch.py: the same step, at
1/5 width before 2026-11-30), diffusers eager vs patched (with ``compile``: also torch.compile of each).

    OMP_NUM_THREADS=1 python bench/results/models/diffusion/thread_time.py step|loop|decode|patch_step ROUNDS [compile]

Prints each impl's median, interquartile range (% of the median), diffusers-eager/impl ratio of the medians
and the median of the per-round ratios (each round times every impl back to back, so a slow stretch of a
shared machine weighs on both sides of a round's ratio)."""
import statistics
import sys
import time

import torch

from genkernels import bench_models as bm
from genkernels import bench_patch as bp
from genkernels.benchkit import COMPILE, EAGER, steady_cpu_allocator

OURS = "genkernels[cpu]"


def main(case: str, rounds: int, with_compile: bool):
    torch.set_num_threads(1)
    allocator = steady_cpu_allocator()   # as `genkernels bench` does (page faults independent of impl order)
    if case == "patch_step":
        names = [EAGER, bp.PATCHED] + ([COMPILE, bp.PATCHED_COMPILE] if with_compile else [])
        fns = bp._unet_setup(torch.device("cpu"))(names)
    else:
        setup = {"step": bm._unet_step_setup, "loop": bm._unet_loop_setup, "decode": bm._vae_decode_setup}[case]
        fns = setup(torch.device("cpu"))([EAGER, OURS] + ([COMPILE] if with_compile else []))
    if case == "step":   # the patch benchmark's step is this one
        fns.update(bp._unet_setup(torch.device("cpu"))([bp.PATCHED]))
    for f in fns.values():   # warm-up (torch.compile compiles here)
        f()
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = time.thread_time()
            f()
            times[k].append(time.thread_time() - t0)
    eager = statistics.median(times[EAGER])
    print(f"{case}: {rounds} rounds, thread CPU time, load {open('/proc/loadavg').read().split()[:3]}; {allocator}")
    for k, v in times.items():
        q1, _, q3 = statistics.quantiles(v, n=4)
        m = statistics.median(v)
        paired = statistics.median(e / x for e, x in zip(times[EAGER], v))
        print(f"  {k:18s} {m * 1e3:9.1f} ms  IQR {(q3 - q1) / m * 100:5.1f} %  eager/this {eager / m:.3f}  "
              f"per round {paired:.3f}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), "compile" in sys.argv[3:])
