"""attention: every available backend against a float64 reference, forward and backward.

Correctness criterion: every element of our output and of each gradient is within its first-order
floating-point error bound (tests/attention_bound.py: from the magnitudes of the terms, so tight where
results are large and honest where they cancel, as dq and dk do with one key) of the float64 reference
computed from the same rounded inputs.
Masks: key_padding_mask True = padding (ignored); a fully masked row gives zeros and zero gradients.
is_causal: key j masked for query i when j > i (top-left aligned, as torch SDPA, also for Lq != Lk).
"""
import pytest
import torch

import genkernels
from genkernels.ops.attention import attention, attention_reference
from attention_bound import worst_ratios
from conftest import DEVICE, compiled_backends
from cuda_emu_fixture import emulated, needs_cuemu, ran  # noqa: F401 (emulated: a fixture)

INTERP = DEVICE.type == "cpu"
BACKENDS = ["reference"] + [b for b in compiled_backends() if b != "cuda" or DEVICE.type == "cuda"]
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
# (B, H, Lq, Lk, d): cross-attention (fast path), Lk = 1, tiled self-attention, odd head dims
SHAPES = [(2, 3, 37, 77, 40), (2, 1, 5, 1, 64), (1, 2, 70, 600, 80), (1, 1, 9, 20, 8), (1, 1, 17, 33, 160),
          (1, 2, 7, 13, 5)]
TRITON_SHAPES = [(2, 3, 9, 77, 40), (1, 1, 5, 1, 8), (1, 1, 17, 70, 16)]


def shapes(backend):
    return TRITON_SHAPES if backend == "triton" and INTERP else SHAPES


def dtypes(backend):
    return [d for d in DTYPES if not (d == torch.float64 and backend in ("triton", "cuda"))]


def make(B, H, Lq, Lk, d, dtype, seed=0, masked=False):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, L, d, generator=g, dtype=torch.float64).to(dtype).to(DEVICE)
               for L in (Lq, Lk, Lk))
    mask = None
    if masked:
        mask = torch.rand(B, Lk, generator=g) < 0.3
        mask[:, 0] = False  # keep one key per row (fully masked rows are tested separately)
        mask = mask.to(DEVICE)
    return q, k, v, mask


def fwd_bwd(fn, q, k, v, mask, dout):
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = fn(q, k, v, mask)
    out.backward(dout.to(out.dtype))
    return out.detach(), q.grad, k.grad, v.grad


def run(backend, q, k, v, mask, **kw):
    with genkernels.use_backend(backend):
        return attention(q, k, v, key_padding_mask=mask, **kw)


def tokens(t):
    """[B, H, L, d] -> the token layout [B, L, H*d]."""
    B, H, L, d = t.shape
    return t.transpose(1, 2).reshape(B, L, H * d)


def grad_out(q, v):
    return torch.randn(q.shape[:3] + (v.shape[-1],), dtype=torch.float64,
                       generator=torch.Generator().manual_seed(1)).to(DEVICE)


def truncates(backend, dtype):
    """Triton's interpreter converts float32 to bfloat16 by truncation (triton/runtime/interpreter.py,
    cast_impl: no rounding mode), where a GPU rounds to nearest."""
    return backend == "triton" and INTERP and dtype == torch.bfloat16


def assert_within_bound(ours, q, k, v, mask, dout, what, causal=False, backend=None):
    """The criterion above for ours = (out, dq, dk, dv) computed by `backend` from q, k, v, mask, dout."""
    for name, o in zip(("out", "dq", "dk", "dv"), ours):
        assert o.dtype == q.dtype, name
    ratios = worst_ratios(ours, q, k, v, mask, dout.to(q.dtype), causal, truncates(backend, q.dtype))
    assert max(ratios.values()) <= 1.0, f"{what}: error / bound {ratios}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("masked", [False, True])
def test_parity_within_bound(backend, masked):
    for dtype in dtypes(backend):
        for shape in shapes(backend):
            q, k, v, mask = make(*shape, dtype, masked=masked)
            dout = grad_out(q, v)
            ours = fwd_bwd(lambda q_, k_, v_, m_: run(backend, q_, k_, v_, m_), q, k, v, mask, dout)
            assert ours[0].dtype == dtype and ours[0].shape == q.shape
            assert_within_bound(ours, q, k, v, mask, dout, f"{backend} {dtype} {shape}", backend=backend)


# causal: Lq = Lk, Lq < Lk, Lq > Lk (rows past Lk see every key); sizes that cross the CPU kernels' query
# blocks (64 rows) and key tiles (256 keys past the 512-key single-tile path) and Triton's blocks (64)
CAUSAL_SHAPES = [(2, 3, 37, 37, 40), (1, 2, 70, 600, 32), (1, 1, 600, 600, 16), (2, 1, 90, 20, 8),
                 (1, 1, 17, 33, 160)]
TRITON_CAUSAL_SHAPES = [(1, 2, 70, 70, 16), (1, 1, 9, 77, 40), (1, 1, 80, 20, 8)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("masked", [False, True])
def test_causal_parity_within_bound(backend, masked):
    shapes_ = TRITON_CAUSAL_SHAPES if backend == "triton" and INTERP else CAUSAL_SHAPES
    for dtype in dtypes(backend):
        for shape in shapes_:
            q, k, v, mask = make(*shape, dtype, masked=masked)
            dout = grad_out(q, v)
            ours = fwd_bwd(lambda q_, k_, v_, m_: run(backend, q_, k_, v_, m_, is_causal=True), q, k, v, mask, dout)
            assert_within_bound(ours, q, k, v, mask, dout, f"causal {backend} {dtype} {shape}", causal=True,
                                backend=backend)


# Triton's head-dim buckets BD = 128 and 256 (d = 100, 160) have their own tiles per dtype and causality
# (triton/attention.py _tiles); the interpreter shapes above stop at BD = 64.
@pytest.mark.skipif("triton" not in BACKENDS, reason="no triton backend")
@pytest.mark.parametrize("shape, causal", [((1, 1, 21, 37, 100), False), ((1, 1, 19, 35, 160), False),
                                           ((1, 1, 35, 35, 100), True), ((1, 1, 37, 21, 160), True)])
def test_triton_large_head_dims_within_bound(shape, causal):
    for dtype in dtypes("triton"):
        q, k, v, mask = make(*shape, dtype)
        dout = grad_out(q, v)
        ours = fwd_bwd(lambda q_, k_, v_, m_: run("triton", q_, k_, v_, m_, is_causal=causal), q, k, v, mask, dout)
        assert_within_bound(ours, q, k, v, mask, dout, f"triton {dtype} {shape} causal={causal}", causal=causal,
                            backend="triton")


@pytest.mark.parametrize("backend", BACKENDS)
def test_causal_matches_sdpa_and_token_layout(backend):
    """Semantics = torch SDPA is_causal (top-left aligned) for Lq <, =, > Lk; token layout; a row whose
    only visible key is padding gives zeros (key 0 padded: row 0 sees nothing)."""
    F = torch.nn.functional
    for B, H, Lq, Lk, d in ((2, 2, 7, 12, 8), (2, 2, 12, 7, 8), (1, 3, 9, 9, 16)):
        q, k, v, _ = make(B, H, Lq, Lk, d, torch.float32)
        expect = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=True)
        torch.testing.assert_close(run(backend, q, k, v, None, is_causal=True).double(), expect,
                                   atol=2e-5, rtol=2e-5)
        tok = run(backend, tokens(q), tokens(k), tokens(v), None, heads=H, is_causal=True)
        torch.testing.assert_close(tok.double(), tokens(expect), atol=2e-5, rtol=2e-5)
    q, k, v, _ = make(2, 1, 6, 6, 8, torch.float32)
    mask = torch.zeros(2, 6, dtype=torch.bool, device=DEVICE)
    mask[1, 0] = True
    out, dq, dk, dv = fwd_bwd(lambda *a: run(backend, *a, is_causal=True), q, k, v, mask,
                              torch.ones_like(q).double())
    assert (out[1, :, 0] == 0).all() and (dq[1, :, 0] == 0).all() and torch.isfinite(out).all()
    assert (dk[1, :, 0] == 0).all() and (dv[1, :, 0] == 0).all()
    assert (out[1, :, 1] - v[1, :, 1]).abs().max() < 1e-6  # row 1 sees key 1 alone


@pytest.mark.parametrize("token_layout", [False, True])
def test_cuda_backward_within_bound(token_layout):
    """The CUDA backward kernel (csrc/cuda/attention_bwd.cu) on the GPU: a mask whose last batch element
    masks every key (all its rows fully masked: zero output and gradients), the rest held to the
    criterion above; head dims 40/80/160, Lk = 1, [B, H, L, d] and the token layout."""
    if "cuda" not in BACKENDS:
        pytest.skip("needs a GPU and genkernels._C_cuda")
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for B, H, Lq, Lk, d in ((3, 2, 37, 77, 40), (3, 2, 5, 1, 80), (3, 1, 70, 300, 160)):
            q, k, v, mask = make(B, H, Lq, Lk, d, dtype, masked=True)
            mask[-1] = True
            dout = grad_out(q, v)

            def fn(q_, k_, v_, m_):
                if not token_layout:
                    return run("cuda", q_, k_, v_, m_)
                out = run("cuda", tokens(q_), tokens(k_), tokens(v_), m_, heads=H)
                return out.view(B, Lq, H, d).transpose(1, 2)

            ours = fwd_bwd(fn, q, k, v, mask, dout)
            what = f"cuda {dtype} {(B, H, Lq, Lk, d)} token_layout={token_layout}"
            for name, t in zip(("out", "dq", "dk", "dv"), ours):
                assert (t[-1] == 0).all(), f"{what} {name}: fully masked batch element not zero"
            assert_within_bound([t[:-1] for t in ours], q[:-1], k[:-1], v[:-1], mask[:-1], dout[:-1], what)


@needs_cuemu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_emulated_within_bound(emulated, dtype):
    """The CUDA kernels run on the CPU by the emulator (tests/cuda_emu_fixture.py) held to the criterion
    above: one key, a padding mask, causal."""
    for shape, masked, causal in (((2, 1, 5, 1, 64), False, False), ((1, 2, 9, 21, 40), True, False),
                                  ((1, 1, 17, 13, 16), True, True)):
        q, k, v, mask = make(*shape, dtype, masked=masked)
        dout = grad_out(q, v)
        ours = fwd_bwd(lambda *a: run(emulated, *a, is_causal=causal), q, k, v, mask, dout)
        assert_within_bound(ours, q, k, v, mask, dout, f"emulated cuda {dtype} {shape}", causal)
    ran("attention_fwd", "attention_bwd")


@pytest.mark.parametrize("backend", BACKENDS)
def test_fully_masked_row_is_zero(backend):
    q, k, v, _ = make(2, 2, 5, 7, 8, torch.float32)
    mask = torch.zeros(2, 7, dtype=torch.bool, device=DEVICE)
    mask[1] = True
    out, dq, dk, dv = fwd_bwd(lambda *a: run(backend, *a), q, k, v, mask, torch.ones_like(q).double())
    assert torch.isfinite(out).all() and (out[1] == 0).all()
    assert (dq[1] == 0).all() and (dk[1] == 0).all() and (dv[1] == 0).all()
    ref = attention_reference(q[:1], k[:1], v[:1])
    torch.testing.assert_close(out[:1], ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_token_layout_matches(backend):
    B, H, Lq, Lk, d = 2, 3, 11, 13, 8
    q, k, v, mask = make(B, H, Lq, Lk, d, torch.float32, masked=True)
    tok = [tokens(t) for t in (q, k, v)]
    out = run(backend, *tok, mask, heads=H)
    assert out.shape == (B, Lq, H * d)
    expect = tokens(attention_reference(q, k, v, key_padding_mask=mask))
    torch.testing.assert_close(out, expect, atol=2e-5, rtol=2e-5)
    # strided views (e.g. a fused qkv projection) need no copies and give the same result
    qkv = torch.cat(tok, -1) if Lq == Lk else None
    if qkv is not None:
        qs, ks, vs = qkv.split(H * d, -1)
        torch.testing.assert_close(run(backend, qs, ks, vs, mask, heads=H), out)


# the UNet's calls: token layout [B, L, H*d], no mask, self- and cross-attention (77 keys), head dims of
# whole vectors (the CPU kernel reads v in place) and not (5: it packs v)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("Lq, Lk, d", [(16, 16, 40), (16, 77, 40), (4, 77, 160), (4, 4, 160), (9, 77, 5)])
def test_token_layout_unmasked(backend, Lq, Lk, d):
    B, H = 2, 4
    q, k, v, _ = make(B, H, Lq, Lk, d, torch.float32)
    out = run(backend, *(tokens(t) for t in (q, k, v)), None, heads=H)
    expect = tokens(attention_reference(q.double(), k.double(), v.double())).float()
    torch.testing.assert_close(out, expect, atol=2e-6, rtol=2e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_noncontiguous_and_empty(backend):
    q, k, v, _ = make(2, 3, 6, 5, 8, torch.float32)
    qt = q.transpose(0, 1).contiguous().transpose(0, 1)  # non-contiguous [B, H, L, d]
    torch.testing.assert_close(run(backend, qt, k, v, None), attention_reference(q, k, v), atol=2e-5, rtol=2e-5)
    for B, Lq in ((0, 6), (2, 0)):
        qe, ke, ve, _ = make(B, 3, Lq, 5, 8, torch.float32)
        qe.requires_grad_()
        out = run(backend, qe, ke, ve, None)
        assert out.shape == qe.shape
        out.sum().backward()
        assert qe.grad.shape == qe.shape


def test_gradcheck_float64():
    if "cpu" not in BACKENDS and DEVICE.type == "cpu":
        pytest.skip("no cpu backend")
    q, k, v, mask = make(1, 2, 5, 7, 8, torch.float64, masked=True)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    assert torch.autograd.gradcheck(lambda a, b, c: attention(a, b, c, key_padding_mask=mask), (q, k, v))
    assert torch.autograd.gradcheck(lambda a, b, c: attention(a, b, c, heads=2),
                                    tuple(t.detach().transpose(1, 2).reshape(1, -1, 16).requires_grad_()
                                          for t in (q, k, v)))


def test_gradcheck_causal_float64():
    for Lq, Lk in ((5, 7), (7, 4)):
        q, k, v, mask = make(1, 2, Lq, Lk, 8, torch.float64, masked=True)
        q, k, v = (t.requires_grad_() for t in (q, k, v))
        assert torch.autograd.gradcheck(lambda a, b, c: attention(a, b, c, key_padding_mask=mask, is_causal=True),
                                        (q, k, v))
    q, k, v, _ = make(1, 1, 3, 4, 8, torch.float64)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    assert torch.autograd.gradgradcheck(lambda a, b, c: attention(a, b, c, is_causal=True), (q, k, v))


def test_gradgradcheck_float64():
    q, k, v, _ = make(1, 1, 3, 4, 8, torch.float64)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    assert torch.autograd.gradgradcheck(lambda a, b, c: attention(a, b, c), (q, k, v))


def test_opcheck():
    q, k, v, mask = make(2, 2, 5, 7, 8, torch.float32, masked=True)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    torch.library.opcheck(torch.ops.genkernels.attention.default, (q, k, v, mask, 0.3, 0))
    tok = [t.detach().transpose(1, 2).reshape(2, -1, 16).requires_grad_() for t in (q, k, v)]
    torch.library.opcheck(torch.ops.genkernels.attention.default, (*tok, None, 0.3, 2))
    torch.library.opcheck(torch.ops.genkernels.attention.default, (q, k, v, mask, 0.3, 0, True))
    torch.library.opcheck(torch.ops.genkernels.attention.default, (*tok, None, 0.3, 2, True))


def test_compile_fullgraph():
    q, k, v, mask = make(2, 2, 5, 7, 8, torch.float32, masked=True)
    q.requires_grad_()

    for causal in (False, True):
        def f(q, k, v, mask):
            return attention(q, k, v, key_padding_mask=mask, is_causal=causal).sin().sum()

        cf = torch.compile(f, fullgraph=True, backend="aot_eager")
        torch.testing.assert_close(cf(q, k, v, mask), f(q, k, v, mask))
        g1, = torch.autograd.grad(cf(q, k, v, mask), q)
        g2, = torch.autograd.grad(f(q, k, v, mask), q)
        torch.testing.assert_close(g1, g2)


def test_errors():
    q, k, v, _ = make(2, 2, 5, 7, 8, torch.float32)
    with pytest.raises(ValueError, match="`q` must be 4-D"):
        attention(q[0], k, v)
    with pytest.raises(ValueError, match="`k` must be"):
        attention(q, k[:, :1], v)
    with pytest.raises(ValueError, match="`v` must have the shape"):
        attention(q, k, v[:, :, :3])
    with pytest.raises(TypeError, match="`k` has dtype"):
        attention(q, k.double(), v)
    with pytest.raises(TypeError, match="`q` has dtype"):
        attention(q.int(), k, v)
    with pytest.raises(TypeError, match="`key_padding_mask` must have dtype bool"):
        attention(q, k, v, key_padding_mask=torch.zeros(2, 7))
    with pytest.raises(ValueError, match=r"`key_padding_mask` must have shape \[B, Lk\]"):
        attention(q, k, v, key_padding_mask=torch.zeros(2, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="`heads`=3 must divide"):
        attention(torch.randn(2, 5, 16), torch.randn(2, 7, 16), torch.randn(2, 7, 16), heads=3)
    with pytest.raises(ValueError, match="`heads` must be a positive int"):
        attention(torch.randn(2, 5, 16), torch.randn(2, 7, 16), torch.randn(2, 7, 16), heads=0)
    with pytest.raises(ValueError, match="Lk >= 1"):
        attention(q, k[:, :, :0], v[:, :, :0])
    with pytest.raises(TypeError, match="`is_causal` must be a bool"):
        attention(q, k, v, is_causal=1)


def test_nn_attention_loads_diffusers_weights_and_processor():
    pytest.importorskip("diffusers")
    from diffusers.models.attention_processor import Attention as DAttention, AttnProcessor2_0
    from genkernels.diffusers import AttnProcessor
    from genkernels.nn.attention import Attention

    torch.manual_seed(0)
    for cross in (None, 24):
        ref = DAttention(query_dim=32, cross_attention_dim=cross, heads=4, dim_head=8).eval()
        ref.set_processor(AttnProcessor2_0())
        x = torch.randn(2, 19, 32)
        ctx = torch.randn(2, 7, cross) if cross else None
        with torch.no_grad():
            expect = ref(x, encoder_hidden_states=ctx)
            mine = Attention(32, cross_attention_dim=cross, heads=4, dim_head=8)
            mine.load_state_dict(ref.state_dict())
            torch.testing.assert_close(mine(x, ctx), expect, atol=1e-5, rtol=1e-5)
            ref.set_processor(AttnProcessor())
            torch.testing.assert_close(ref(x, encoder_hidden_states=ctx), expect, atol=1e-5, rtol=1e-5)
            # [B, C, H, W] input, as in the UNet's transformer blocks
            img = torch.randn(2, 32, 3, 5)
            ref.set_processor(AttnProcessor2_0())
            e4 = ref(img, encoder_hidden_states=ctx)
            ref.set_processor(AttnProcessor())
            torch.testing.assert_close(ref(img, encoder_hidden_states=ctx), e4, atol=1e-5, rtol=1e-5)
    # gradients flow through the module
    m = Attention(16, heads=2, dim_head=8)
    x = torch.randn(1, 5, 16, requires_grad=True)
    m(x).sum().backward()
    assert x.grad is not None and m.to_q.weight.grad is not None
