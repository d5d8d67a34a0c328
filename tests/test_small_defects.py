"""Regression tests of issue 10's smaller defects (item 8)."""
import numpy as np
import pytest
import torch

import genkernels as gk
from conftest import compiled_backends

BACKENDS = ["reference"] + compiled_backends("cpu")


def _negated(*shape):
    """A contiguous float tensor with the negative bit (what ``complex.conj().imag`` gives, there only
    for one element or strided)."""
    t = torch._neg_view(-torch.randn(*shape))
    assert t.is_neg() and t.is_contiguous()
    return t


_NEG_CALLS = {  # op -> fn(negated tensor maker) -> outputs
    "ddim_step": lambda t: gk.ddim_step(t(2, 4, 3, 3), t(2, 4, 3, 3), 0.5, 0.6),
    "group_norm_silu": lambda t: gk.group_norm_silu(t(2, 4, 3, 3), 2, t(4), t(4), scale=t(2, 4), shift=t(2, 4)),
    "adain": lambda t: gk.adain(t(2, 4, 3, 3), t(2, 4), t(2, 4)),
    "attention": lambda t: gk.attention(t(1, 2, 3, 8), t(1, 2, 5, 8), t(1, 2, 5, 8)),
    "vq_nearest": lambda t: gk.vq_nearest(t(6, 4), t(5, 4)),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", sorted(_NEG_CALLS))
def test_negated_views_are_read_as_their_values(op, backend):
    """Kernels read raw memory: a view with the negative bit must give what its resolved values give
    (the eager fast path leaves such calls to the dispatcher, which resolves them)."""
    seed = torch.seed()
    with gk.use_backend(backend):
        got = _NEG_CALLS[op](_negated)
        torch.manual_seed(seed)
        want = _NEG_CALLS[op](lambda *shape: _negated(*shape).resolve_neg())
    for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


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
