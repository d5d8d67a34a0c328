"""Kernel launches per call, from the torch profiler."""
from __future__ import annotations

from typing import Optional

import torch

from .timing import Impl, sync

# Aten ops that only make views or metadata (no kernel runs).
_VIEW_OPS = {"aten::view", "aten::chunk", "aten::split", "aten::narrow", "aten::slice", "aten::as_strided",
             "aten::unsqueeze", "aten::squeeze", "aten::expand", "aten::reshape", "aten::t", "aten::transpose",
             "aten::permute", "aten::select", "aten::detach", "aten::alias", "aten::lift_fresh",
             "aten::empty", "aten::empty_like", "aten::empty_strided", "aten::unbind", "aten::movedim"}


def count_launches(fn: Impl, device) -> Optional[int]:
    """Kernels one call of `fn` runs, from the torch profiler. CUDA: device activities (kernels,
    memcpy, memset), exact. CPU: top-level aten ops other than views (eager: one kernel each), native
    genkernels calls (``genkernels::*`` ranges) and inductor's C++ kernels (visible when compiled with
    ``cpp.enable_kernel_profile``); None when a compiled region shows no kernels (not countable)."""
    from torch.profiler import ProfilerActivity, profile

    device = torch.device(device)
    fn()
    sync(device)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        fn()
        sync(device)
    events = prof.events()
    if device.type == "cuda":
        return sum(1 for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
    n, compiled_regions = 0, 0
    for e in events:
        name = e.name
        if name.startswith("genkernels::") or "cpp_fused" in name:
            n += 1
        elif e.cpu_parent is None and name.startswith("aten::") and name not in _VIEW_OPS:
            n += 1
        elif e.cpu_parent is None and name.startswith("Torch-Compiled Region"):
            compiled_regions += 1
    if compiled_regions and not any("cpp_fused" in e.name for e in events):
        return None
    return n
