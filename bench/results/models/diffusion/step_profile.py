"""Self CPU time per torch operator of one UNet step (the ``genkernels bench --ops unet`` step case), for
diffusers eager, ours (``genkernels.models.unet``) and ``genkernels.patch`` of diffusers' UNet, profiled in
turns in one process, one thread; averaged over ROUNDS steps each (call counts per step in brackets).

    OMP_NUM_THREADS=1 python bench/results/models/diffusion/step_profile.py [ROUNDS]

The profiler's per-call overhead inflates small calls (norms, adds, views) relative to the GEMMs."""
import collections
import copy
import sys

import torch
from torch.profiler import ProfilerActivity, profile

import genkernels
from genkernels import bench_models as bm


def main(rounds: int):
    torch.set_num_threads(1)
    cfg, size, dtype = bm._unet_shape(torch.device("cpu"), loop=False)
    theirs, ours = bm._unet_pair(cfg, "cpu", dtype)
    x, t, ctx = bm._unet_inputs(cfg, size, "cpu", dtype)
    patched = copy.deepcopy(theirs)
    genkernels.patch(patched)
    fns = {"eager": lambda: theirs(x, t, ctx).sample, "ours": lambda: ours(x, t, ctx),
           "patched": lambda: patched(x, t, ctx).sample}
    ms = {k: collections.Counter() for k in fns}
    calls = {k: collections.Counter() for k in fns}
    with torch.no_grad():
        for f in fns.values():
            f()
        for _ in range(rounds):
            for k, f in fns.items():
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    f()
                for e in prof.key_averages():
                    ms[k][e.key] += e.self_cpu_time_total / 1e3 / rounds
                    calls[k][e.key] += e.count / rounds
    keys = sorted(set().union(*ms.values()), key=lambda op: -max(ms[k][op] for k in fns))
    print(f"{rounds} rounds, load {open('/proc/loadavg').read().split()[:3]}; self CPU ms per step (calls)")
    print(f"{'op':36s}" + "".join(f"{k:>18s}" for k in fns))
    for op in keys[:30]:
        print(f"{op[:36]:36s}" + "".join(f"{ms[k][op]:10.1f} ({calls[k][op]:4.0f})" for k in fns))
    print(f"{'total':36s}" + "".join(f"{sum(ms[k].values()):10.1f}       " for k in fns))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
