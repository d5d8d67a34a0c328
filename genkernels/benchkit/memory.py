"""Peak extra memory of one call: torch's CUDA allocator statistics, or the peak RSS of a fresh
process on CPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Dict, Optional

import torch

from .cases import Case
from .timing import Impl

_PEAK_SCRIPT = r"""
import gc, json, sys, torch
from genkernels import benchkit
op, label, impl = sys.argv[1:4]
case = next(c for c in benchkit.cases(op, "cpu") if c.label == label)
fn = case.setup([impl])[impl]
def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
fn(); fn(); gc.collect()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets VmHWM (peak RSS) to the current RSS
base = status("VmRSS:")
fn()
print(json.dumps(status("VmHWM:") - base))
"""


def peak_extra_bytes(case: Case, impl: str, impls: Optional[Dict[str, Impl]] = None) -> Optional[int]:
    """Memory one call of `impl` needs beyond what exists before it (inputs, warm-up caches), after
    two warm-up calls. CUDA: ``torch.cuda.max_memory_allocated`` over the call (every allocation of
    torch's, the scratch ``workspace`` of the cuda backend's kernels included, as Triton's and
    torch's own temporaries are: the same measure for every backend). CPU (Linux): the rise
    of the peak RSS over the call, in a fresh process (the case is rebuilt there from its op and
    label) with ``MALLOC_MMAP_THRESHOLD_=65536`` so that freed buffers leave the RSS. None if unknown."""
    if case.device.type == "cuda":
        fn = impls[impl] if impls else case.setup([impl])[impl]
        fn(); fn()
        torch.cuda.synchronize(case.device)
        base = torch.cuda.memory_allocated(case.device)
        torch.cuda.reset_peak_memory_stats(case.device)
        fn()
        torch.cuda.synchronize(case.device)
        return int(torch.cuda.max_memory_allocated(case.device) - base)
    if not sys.platform.startswith("linux"):
        return None
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    r = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, case.op, case.label, impl], capture_output=True,
                       text=True, env=env, timeout=1800)
    if r.returncode != 0:
        return None
    return int(json.loads(r.stdout.strip().splitlines()[-1]))
