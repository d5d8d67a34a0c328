"""Regression tests of issue 10's smaller defects (item 8)."""
import numpy as np
import pytest
import torch

import genkernels as gk
from conftest import compiled_backends

BACKENDS = ["reference"] + compiled_backends("cpu")


@pytest.mark.parametrize("backend", BACKENDS)
def test_ddim_step_reads_negated_views(backend):
    x = torch.tensor([2 + 3j]).conj().imag  # a 1-element view with the negative bit: -3
    assert x.is_neg()
    m = torch.tensor([0.5])
    with gk.use_backend(backend):
        prev, x0 = gk.ddim_step(x, m, 0.5, 0.6)
    want_prev, want_x0 = gk.ddim_step_reference(x.resolve_neg(), m, 0.5, 0.6)
    torch.testing.assert_close(prev, want_prev)
    torch.testing.assert_close(x0, want_x0)


@pytest.mark.parametrize("eps, exc", [(None, TypeError), ("1e-5", TypeError), (-1.0, ValueError),
                                      (float("nan"), ValueError), (float("inf"), ValueError)])
def test_eps_is_checked(eps, exc):
    x = torch.randn(2, 4, 3, 3)
    s = torch.randn(2, 4)
    for fn in (lambda: gk.group_norm_silu(x, 2, eps=eps), lambda: gk.group_norm_silu_reference(x, 2, eps=eps),
               lambda: gk.adain(x, s, s, eps=eps), lambda: gk.adain_reference(x, s, s, eps=eps)):
        with pytest.raises(exc, match="`eps`"):
            fn()


def test_attention_scale():
    q = torch.randn(1, 2, 3, 4)
    for bad in (float("inf"), float("nan")):
        with pytest.raises(ValueError, match="`scale`"):
            gk.attention(q, q, q, scale=bad)
    with pytest.raises(TypeError, match="`scale`"):
        gk.attention(q, q, q, scale="0.5")
    torch.testing.assert_close(gk.attention(q, q, q, scale=np.float32(0.5)), gk.attention(q, q, q, scale=0.5))


@pytest.mark.parametrize("backend", BACKENDS)
def test_adain_zero_channels(backend):
    x = torch.randn(2, 0, 3, 3)
    s = torch.randn(2, 0)
    with gk.use_backend(backend):
        assert gk.adain(x, s, s).shape == x.shape
    assert gk.adain_reference(x, s, s).shape == x.shape
