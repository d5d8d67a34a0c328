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


def attention_grads(backend, q, k, v, **kw):
    """(out, dq, dk, dv) of attention(q, k, v, **kw).sum() on `backend`."""
    q, k, v = (t.clone().requires_grad_(True) for t in (q, k, v))
    with gk.use_backend(backend):
        out = gk.attention(q, k, v, **kw)
        return (out.detach(),) + torch.autograd.grad(out.sum(), (q, k, v))


@pytest.mark.parametrize("backend", ATTN_BACKENDS)
@pytest.mark.parametrize("where", ["k", "v"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_attention_key_hidden_by_causal_is_ignored(request, backend, where, bad):
    """Key 70's k or v is non-finite: the rows that is_causal hides it from (i < 70, on both sides of a
    64-row tile edge) and every gradient they produce are those of a finite key there; rows >= 70 see it."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 80, 16, generator=g) for _ in range(3))
    clean = attention_grads("reference", q, k, v, is_causal=True)
    (k if where == "k" else v)[0, 1, 70, 3] = bad
    got = attention_grads(backend_name(request, backend), q, k, v, is_causal=True)
    for name, c, o in zip(("out", "dq"), clean, got):
        torch.testing.assert_close(o[0, 1, :70], c[0, 1, :70], atol=1e-4, rtol=1e-4, msg=name)
        torch.testing.assert_close(o[0, 0], c[0, 0], atol=1e-4, rtol=1e-4, msg=name)
    assert not torch.isfinite(got[0][0, 1, 70:]).all()
    for name, c, o in zip(("dk", "dv"), clean[2:], got[2:]):  # keys after 70: only rows >= 70 see them
        assert torch.isfinite(o[0, 0]).all(), name


@pytest.mark.parametrize("backend", ATTN_BACKENDS)
def test_attention_query_hidden_by_causal_is_ignored(request, backend):
    """A NaN query row 5 makes its own row NaN and the gradients of the keys it sees (0..5); the keys
    hidden from it (6.., past a tile edge too) keep finite gradients."""
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 1, 70, 16, generator=g) for _ in range(3))
    q[0, 0, 5, 2] = float("nan")
    out, dq, dk, dv = attention_grads(backend_name(request, backend), q, k, v, is_causal=True)
    assert out[0, 0, 5].isnan().all() and dq[0, 0, 5].isnan().all()
    keep = torch.ones(70, dtype=torch.bool)
    keep[5] = False
    assert torch.isfinite(out[0, 0, keep]).all() and torch.isfinite(dq[0, 0, keep]).all()
    assert dk[0, 0, :6].isnan().any(dim=-1).all() and dv[0, 0, :6].isnan().any(dim=-1).all()
    assert torch.isfinite(dk[0, 0, 6:]).all() and torch.isfinite(dv[0, 0, 6:]).all()


@pytest.mark.parametrize("backend", ATTN_BACKENDS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_attention_fully_masked_row_is_zero_whatever_q_holds(request, backend, bad):
    """Rows with every key masked (batch 0: all padding; batch 1 causal rows 0-2: keys 0-2 padding) give
    zeros and zero gradients for a non-finite query, and the padding keys' gradients stay 0."""
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, 2, 6, 8, generator=g) for _ in range(3))
    q[:, 1, 1, 4] = bad
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[0] = True
    mask[1, :3] = True
    for causal in (False, True):
        out, dq, dk, dv = attention_grads(backend_name(request, backend), q, k, v, key_padding_mask=mask,
                                          is_causal=causal)
        assert (out[0] == 0).all() and (dq[0] == 0).all()
        assert (dk[:, :, :3] == 0).all() and (dv[:, :, :3] == 0).all()
        if causal:
            assert (out[1, :, :3] == 0).all() and (dq[1, :, :3] == 0).all()
            assert torch.isfinite(dk[1]).all() and torch.isfinite(dv[1]).all()


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


# ----------------------------------------------------------------------------------- ddim / ddpm step
# Every combination of these values in sample, model output (both halves with guidance) and noise, one
# element each, for every update, prediction type, clipping, use_clipped_model_output and noise setting:
# each output is NaN / +-inf exactly where the reference formula makes it so (a backend computing a term
# the reference does not have leaks 0 * NaN).
STEP_VALUES = (float("nan"), float("inf"), -float("inf"), 0.75)
# per-sample alphas (a_t, a_prev): inside the domain, a_t = 0 (outside it for epsilon: NaN outputs),
# a_prev = 1 (no noise direction left), a_t = a_prev (no variance)
STEP_ALPHAS = ((0.5, 0.6), (0.0, 0.6), (0.5, 1.0), (0.5, 0.5))


def step_configs():
    """(kind, prediction_type, clip_sample_range, use_clipped_model_output, eta, noise given, guided):
    every prediction type x clipping with each update (DDIM with and without use_clipped; DDPM
    fixed_small and fixed_large), the noise settings (DDIM: none, noise at eta = 0, eta > 0) and
    guidance taken in turn, so that each appears with every prediction type."""
    ddim = [(0, pred, clip, uc) for pred in range(3) for clip in (None, 1.0) for uc in (False, True)]
    ddpm = [(1 + (pred + i) % 2, pred, clip, False) for i, clip in enumerate((None, 1.0)) for pred in range(3)]
    noises = ((0.0, False), (0.0, True), (0.5, True))
    for i, cfg in enumerate(ddim):
        yield cfg + noises[i % 3] + (i % 2 == 0,)
    for i, cfg in enumerate(ddpm):
        yield cfg + (0.0, i % 2 == 1, i % 3 != 0)


def step_inputs(guided):
    """x, model output, noise [len(STEP_ALPHAS), E] holding every combination of STEP_VALUES."""
    n_in = 4 if guided else 3
    combos = torch.cartesian_prod(*[torch.tensor(STEP_VALUES)] * n_in)  # [E, n_in]
    N = len(STEP_ALPHAS)
    x, mu, z = (combos[:, i].expand(N, -1).contiguous() for i in (0, 1, n_in - 1))
    mo = torch.cat([mu, combos[:, 2].expand(N, -1)]) if guided else mu
    return x, mo, z, combos


def run_step(kind, pred, clip, uc, eta, noise, guided):
    x, mo, z, _ = step_inputs(guided)
    at, ap = (torch.tensor(a, dtype=torch.float64) for a in zip(*STEP_ALPHAS))
    return torch.ops.genkernels.ddim_step(x, mo, z if noise else None, at, ap, 0.0, 0.0, eta,
                                          2.5 if guided else None, clip, pred, uc, kind)


@pytest.mark.parametrize("backend", BACKENDS[1:] + [pytest.param("cuda-emulated", marks=needs_cuemu)])
def test_step_nonfinite_matches_reference(request, backend):
    name = backend_name(request, backend)
    wrong = []
    for cfg in step_configs():
        with gk.use_backend("reference"):
            want = run_step(*cfg)
        with gk.use_backend(name):
            got = run_step(*cfg)
        for what, g, w in zip(("prev_sample", "pred_original_sample"), got, want):
            bad = ~((g.isnan() & w.isnan()) | (g == w) | ((g - w).abs() <= 1e-5 * (1 + w.abs())))
            for n, e in bad.nonzero().tolist()[:2]:
                inputs = step_inputs(cfg[-1])[3][e].tolist()
                wrong.append(f"{what} (kind, pred, clip, uc, eta, noise, guided)={cfg} alphas={STEP_ALPHAS[n]} "
                             f"inputs={inputs}: {g[n, e].item()} (reference {w[n, e].item()})")
    assert not wrong, f"{len(wrong)} disagreements (first 2 per output and config):\n" + "\n".join(wrong[:40])
