"""The structural cost of a small eager call (issue 10, "keep the eager speed"): how many genkernels
Python functions one plain eager call runs. On a small tensor they, not the kernel, are most of the
call, so a new hop on this path should be a choice, not an accident: the budgets are counts."""
import pytest
import torch

import genkernels as gk
from genkernels.nn.norm import GroupNormSiLU
from python_calls import profiled

PKG_DIR = gk.__path__[0]

# op -> the most genkernels functions one eager call may run (the counts when last lowered; at 6db7325:
# ddim_step 28, group_norm_silu 37, GroupNormSiLU 38, adain 34, attention 35, vq_nearest 23)
BUDGET = {"ddim_step": 24, "group_norm_silu": 30, "GroupNormSiLU": 31, "adain": 27, "attention": 26, "vq_nearest": 19}


def _calls():
    x, w = torch.randn(2, 8, 3, 3), torch.randn(8)
    s = torch.randn(2, 8)
    q = torch.randn(1, 2, 4, 8)
    z, cb = torch.randn(6, 4), torch.randn(5, 4)
    mod = GroupNormSiLU(4, 8)
    return {"ddim_step": lambda: gk.ddim_step(x, x, 0.5, 0.6), "group_norm_silu": lambda: gk.group_norm_silu(x, 4, w, w),
            "GroupNormSiLU": lambda: mod(x), "adain": lambda: gk.adain(x, s, s),
            "attention": lambda: gk.attention(q, q, q), "vq_nearest": lambda: gk.vq_nearest(z, cb)}


def genkernels_calls(fn) -> list:
    """The genkernels functions fn() calls (sys.setprofile 'call' events in the package's files)."""
    seen = []

    def profile(frame, event, _arg):
        if event == "call" and frame.f_code.co_filename.startswith(PKG_DIR):
            seen.append(f"{frame.f_code.co_filename[len(PKG_DIR) + 1:]}:{frame.f_code.co_name}")

    profiled(fn, profile)
    return seen


@pytest.mark.parametrize("op", sorted(BUDGET))
def test_eager_call_stays_within_its_python_budget(op):
    fn = _calls()[op]
    with torch.no_grad():
        fn()  # (first calls load modules and fill caches)
        seen = genkernels_calls(fn)
    assert seen.count("ops/_common.py:__call__") == 1, seen  # one Op, no dispatcher round trip
    assert len(seen) <= BUDGET[op], f"{op}: {len(seen)} genkernels calls > budget {BUDGET[op]}:\n" + "\n".join(seen)
