"""genkernels/_native.py asks a CUDA kernel for its scratch size (`<kernel>_workspace`) once per
kernel, dtype, shape, device and pointer alignment, not before every launch (issue 10: the eager cost
of a small call). Held on the emulated CUDA kernels (genkernels._C_cuemu)."""
import pytest
import torch

import genkernels
from genkernels import _native
from cuda_emu_fixture import CALLS, emulated, needs_cuemu  # noqa: F401 (emulated: a fixture)

pytestmark = needs_cuemu


def test_size_query_runs_once_per_shape(emulated, monkeypatch):  # noqa: F811 (the fixture)
    monkeypatch.setattr(_native, "_workspace_sizes", {})
    x, y = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 5, 4)
    with genkernels.use_backend(emulated):
        want = [genkernels.group_norm_silu(t, 4) for t in (x, x, y, x, y)]
    assert CALLS.count("group_norm_fwd") == 5
    assert CALLS.count("group_norm_fwd_workspace") == 2  # x's shape, then y's
    for t, got in zip((x, x, y, x, y), want):
        torch.testing.assert_close(got, genkernels.group_norm_silu_reference(t, 4))


def test_a_short_cached_size_is_refused(emulated, monkeypatch):  # noqa: F811 (the fixture)
    """(a size the cache got wrong could never be used: the kernel refuses a short workspace)"""
    sizes = {}
    monkeypatch.setattr(_native, "_workspace_sizes", sizes)
    x = torch.randn(2, 8, 4, 4)
    with genkernels.use_backend(emulated):
        genkernels.group_norm_silu(x, 4)
        (key, need), = sizes.items()
        assert need > 0
        sizes[key] = need - 1
        with pytest.raises(ValueError, match="`workspace` holds"):
            genkernels.group_norm_silu(x, 4)
