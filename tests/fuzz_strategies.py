"""Hypothesis strategies and profiles for the fuzz suite (tests/test_fuzz.py, tests/test_threads.py).

Profiles: "ci" (the default: few examples, derandomized so every CI run draws the same cases) and
"nightly" (many more, random), picked by GENKERNELS_FUZZ=ci|nightly.

Element values come from a seeded torch generator (hypothesis draws the seed, not each element), so a
case is well conditioned; hypothesis draws what finds bugs: shapes (empty dims included), the memory
layout, dtypes, keywords and where NaN/inf go.
"""
import math
import os

import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

settings.register_profile("ci", max_examples=12, deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("nightly", max_examples=400, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("GENKERNELS_FUZZ", "ci"))

FLOATS = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def values(shape, seed, offset=0.0):
    """Standard normal float64 values of `shape` (+ offset), reproducible from seed."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + offset


@st.composite
def poisoned(draw, t, allowed=(math.nan, math.inf, -math.inf), max_count=2):
    """t (a float64 tensor, not modified) with up to max_count elements set to NaN/inf, or t itself."""
    if t.numel() == 0 or not draw(st.booleans()):
        return t
    t = t.clone()
    flat = t.view(-1)
    for _ in range(draw(st.integers(1, max_count))):
        flat[draw(st.integers(0, t.numel() - 1))] = draw(st.sampled_from(allowed))
    return t


@st.composite
def layout(draw, t, expand=True):
    """A tensor equal to t (values, shape, dtype) in a drawn memory layout: dims permuted in memory
    (channels_last among them), every other element along some dims (sliced), a storage offset, or a
    dim of stride 0 (expanded: all its entries become a copy of the first one, so the caller must take
    the values from the returned tensor)."""
    nd = t.dim()
    if nd == 0:
        return t.clone()
    kind = draw(st.sampled_from(["contiguous", "permuted", "channels_last", "strided"]))
    if kind == "contiguous":
        out = t.clone()
    elif kind == "channels_last" and nd in (4, 5):
        out = t.contiguous(memory_format=torch.channels_last if nd == 4 else torch.channels_last_3d)
    else:
        perm = draw(st.permutations(range(nd))) if kind != "contiguous" else list(range(nd))
        steps = [draw(st.sampled_from([1, 1, 2])) if kind == "strided" else 1 for _ in range(nd)]
        offset = draw(st.integers(0, 3)) if kind == "strided" else 0
        big = [n * s for n, s in zip(t.shape, steps)]
        buf = torch.zeros(offset + math.prod(big), dtype=t.dtype)
        inv = [perm.index(i) for i in range(nd)]
        base = buf[offset:].view([big[p] for p in perm]).permute(inv)
        out = base[tuple(slice(None, None, s) for s in steps)]
        out.copy_(t)
    if expand and draw(st.booleans()):
        d = draw(st.integers(0, nd - 1))
        if out.shape[d] > 0:
            out = out.narrow(d, 0, 1).expand(out.shape)
    return out


def layout_name(t):
    """A short description of t's layout for failure messages."""
    return f"shape={tuple(t.shape)} stride={t.stride()} offset={t.storage_offset()} dtype={t.dtype}"
