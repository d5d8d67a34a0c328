"""The non-finite rules (stated in the ops' docstrings and README), held by every backend."""
import pytest
import torch

import genkernels as gk
from conftest import compiled_backends
from cuda_emu_fixture import emulated, needs_cuemu  # noqa: F401 (emulated: a fixture)

BACKENDS = ["reference"] + compiled_backends("cpu")
# the CUDA kernels, run on the CPU by genkernels._C_cuemu
ATTN_BACKENDS = BACKENDS + [pytest.param("cuda-emulated", marks=needs_cuemu)]


def backend_name(request, backend):
    """`backend`, with "cuda-emulated" set up (the `emulated` fixture) and named "cuda"."""
    return request.getfixturevalue("emulated") if backend == "cuda-emulated" else backend


@pytest.mark.parametrize("backend", ATTN_BACKENDS)
def test_attention_nan_key(request, backend):
    """NaN in an attended key makes the rows that attend to it NaN; other batches are unaffected."""
    q, k, v = (torch.randn(2, 2, 5, 8) for _ in range(3))
    k[0, 1, 3, 2] = float("nan")
    with gk.use_backend(backend_name(request, backend)):
        out = gk.attention(q, k, v)
    assert out[0, 1].isnan().all()
    assert torch.isfinite(out[0, 0]).all() and torch.isfinite(out[1]).all()


@pytest.mark.parametrize("backend", ATTN_BACKENDS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_attention_nan_query_row(request, backend, bad):
    """A non-finite query element makes its own output row NaN, and no other row."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 5, 8, generator=g) for _ in range(3))
    q[1, 0, 2, 5] = bad
    # keys on both sides of 0 in that dimension: an inf query then scores +inf and -inf (inf - inf in the
    # softmax); with every key negative all scores would be -inf, a fully masked row (zeros)
    k[1, 0, 0, 5], k[1, 0, 1, 5] = 1.0, -1.0
    with gk.use_backend(backend_name(request, backend)):
        out = gk.attention(q, k, v)
    assert out[1, 0, 2].isnan().all()
    keep = torch.ones(2, 2, 5, dtype=torch.bool)
    keep[1, 0, 2] = False
    assert torch.isfinite(out[keep]).all()


@pytest.mark.parametrize("backend", ATTN_BACKENDS)
@pytest.mark.parametrize("where", ["k", "v"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_attention_nan_in_padding_key_is_ignored(request, backend, where, bad):
    q, k, v = (torch.randn(2, 2, 5, 8, requires_grad=True) for _ in range(3))
    mask = torch.zeros(2, 7, dtype=torch.bool)
    mask[:, 5:] = True
    kk, vv = torch.randn(2, 2, 7, 8), torch.randn(2, 2, 7, 8)
    (kk if where == "k" else vv)[:, :, 6] = bad
    kk.requires_grad_(True)
    vv.requires_grad_(True)
    with gk.use_backend(backend_name(request, backend)):
        out = gk.attention(q, kk, vv, key_padding_mask=mask)
        dq, dk, dv = torch.autograd.grad(out.sum(), (q, kk, vv))
    want = gk.attention_reference(q.detach(), kk.detach()[:, :, :5], vv.detach()[:, :, :5])
    torch.testing.assert_close(out.detach(), want, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(dq).all()
    assert torch.isfinite(dk[:, :, :5]).all() and torch.isfinite(dv[:, :, :5]).all()
    assert (dk[:, :, 5:] == 0).all() and (dv[:, :, 5:] == 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_vq_nan_and_inf_codes_never_win(backend):
    z = torch.randn(6, 4)
    e = torch.randn(5, 4)
    e[0] = float("nan")
    e[2, 1] = float("inf")
    with gk.use_backend(backend):
        idx, dist = gk.vq_nearest(z, e)
    assert not ((idx == 0) | (idx == 2)).any(), idx
    want = torch.cdist(z, e[[1, 3, 4]]).argmin(1)
    assert torch.equal(idx, torch.tensor([1, 3, 4])[want])
    assert torch.isfinite(dist).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_vq_nan_row_of_z_gets_index_0(backend):
    z = torch.randn(3, 4)
    z[1, 2] = float("nan")
    with gk.use_backend(backend):
        idx, _ = gk.vq_nearest(z, torch.randn(5, 4))
    assert idx[1] == 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cl", [False, True])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_norm_nonfinite_poisons_its_group_only(backend, cl, bad):
    x = torch.randn(2, 8, 5, 5)
    x[1, 5, 2, 3] = bad  # sample 1, group 2 of 4
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    with gk.use_backend(backend):
        y = gk.group_norm_silu(x, 4)
    assert y[1, 4:6].isnan().all()
    keep = torch.ones(2, 8, dtype=torch.bool)
    keep[1, 4:6] = False
    assert torch.isfinite(y[keep]).all()
