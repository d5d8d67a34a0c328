"""The CUDA kernels (csrc/cuda/*.cu) run on the CPU: genkernels._C_cuemu is the same source compiled by
the host compiler with csrc/cuda_emu/emu.h (each block as blockDim threads with barriers, warp shuffles
through a per-warp buffer). The `emulated` fixture lets backend "cuda" accept CPU tensors and routes
its native calls to _C_cuemu, so the Python argument preparation is the real cuda backend's; results
are compared with the `reference` backend. Shapes are tiny: every emulated block spawns its threads.
"""
import pytest
import torch

import genkernels
from cuda_emu_fixture import emulated, needs_cuemu, ran  # noqa: F401 (emulated: a fixture)

pytestmark = needs_cuemu

# (atol, rtol) against a float64 reference computed from the same rounded inputs
TOL = {torch.float32: (1e-4, 1e-4), torch.float16: (4e-3, 4e-3), torch.bfloat16: (3e-2, 3e-2)}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def run(backend, fn, tensors, grad=True, seed=1):
    """fn(*tensors) on `backend`; with grad, also the gradients of the tensors that require them for a
    random output gradient. Returns (outputs, grads)."""
    ins = [None if t is None else t.detach().clone().requires_grad_(grad and t.is_floating_point())
           for t in tensors]
    with genkernels.use_backend(backend):
        out = fn(*ins)
        outs = out if isinstance(out, tuple) else (out,)
        grads = []
        if grad:
            g = torch.Generator().manual_seed(seed)
            douts = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype) for o in outs]
            req = [t for t in ins if t is not None and t.requires_grad]
            grads = torch.autograd.grad(outs, req, douts)
    return [o.detach() for o in outs], list(grads)


def check(emu, ref, dtype, what, scale=1.0):
    atol, rtol = TOL[dtype]
    for i, (a, b) in enumerate(zip(emu, ref)):
        if not a.is_floating_point():
            assert torch.equal(a, b), f"{what}[{i}]"
            continue
        mag = max(1.0, b.double().abs().max().item()) if b.numel() else 1.0
        torch.testing.assert_close(a.double(), b.double(), atol=atol * scale * mag, rtol=rtol * scale,
                                   msg=lambda m: f"{what}[{i}]: {m}")


def compare(backend, fn, tensors, dtype, what, grad=True, scale=1.0):
    """Emulated cuda vs the float64 reference on the same (rounded) inputs, outputs and gradients."""
    ins = [None if t is None else t.to(dtype) if t.is_floating_point() else t for t in tensors]
    emu_out, emu_grad = run(backend, fn, ins, grad)
    wide = [None if t is None else t.double() if t.is_floating_point() else t for t in ins]
    ref_out, ref_grad = run("reference", fn, wide, grad)
    check(emu_out, ref_out, dtype, what + " out", scale)
    check(emu_grad, ref_grad, dtype, what + " grad", scale)
    return emu_out


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ------------------------------------------------------------------------------------ normalisation
NORM_CASES = [  # (shape, groups, channels_last, offset): odd sizes, several chunks per row, a large mean
    ((2, 6, 5, 7), 3, False, 0.0),
    ((2, 6, 5, 7), 3, True, 0.0),
    ((1, 8, 24, 24), 2, False, 1000.0),
    ((2, 8, 4, 33), 4, True, 1000.0),
    ((2, 4, 9), 4, False, 0.5),
    ((1, 1030, 3, 3), 10, True, 0.0),  # several channel tiles of one block row
    ((2, 24, 3, 3), 24, True, 1.0),    # instance norm (G = C)
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,G,cl,offset", NORM_CASES)
def test_group_norm_silu(emulated, shape, G, cl, offset, dtype):
    N, C = shape[:2]
    x = randn(*shape) + offset
    if cl:
        x = x.to(memory_format=torch.channels_last)
    w, b = 1 + 0.5 * randn(C, seed=1), randn(C, seed=2)
    scale, shift = 0.3 * randn(N, C, seed=3), randn(N, C, seed=4)
    tol = 30.0 if offset and dtype != torch.float32 else 1.0  # 16-bit rounding of x near 1000

    def fn(x, w, b, scale, shift):
        return genkernels.group_norm_silu(x.contiguous(memory_format=torch.channels_last) if cl else x, G,
                                          w.float() if x.dtype != torch.float64 else w,
                                          b.float() if x.dtype != torch.float64 else b,
                                          scale=scale.float() if x.dtype != torch.float64 else scale,
                                          shift=shift.float() if x.dtype != torch.float64 else shift)

    (y,) = compare(emulated, fn, [x, w, b, scale, shift], dtype, "group_norm_silu", scale=tol)
    if cl and len(shape) == 4:
        assert y.is_contiguous(memory_format=torch.channels_last)
    # plain group norm: no affine, no activation
    compare(emulated, lambda x: genkernels.group_norm_silu(x, G, act=None), [x], dtype, "group_norm",
            scale=tol)
    ran("group_norm_fwd", "group_norm_bwd")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cl", [False, True])
def test_adain(emulated, cl, dtype):
    x = randn(2, 5, 6, 7) * 2 + 3
    if cl:
        x = x.to(memory_format=torch.channels_last)
    s, b = 1 + randn(2, 5, seed=1), randn(2, 5, seed=2)

    def fn(x, s, b):
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        return genkernels.adain(x, s.to(acc), b.to(acc))

    compare(emulated, fn, [x, s, b], dtype, "adain")
    ran("group_norm_fwd", "group_norm_bwd")


# ------------------------------------------------------------------------------------ DDIM / DDPM
STEP_CASES = [  # (shape, kwargs, tensor alphas)
    ((2, 3, 5, 7), dict(), False),
    ((2, 4, 8, 8), dict(guidance_scale=7.5), False),
    ((2, 4, 8, 8), dict(eta=0.7, noise=True, clip_sample_range=1.0), True),
    ((3, 3, 5, 5), dict(prediction_type="v_prediction", guidance_scale=3.0, clip_sample_range=0.5), True),
    ((2, 4, 4, 4), dict(prediction_type="sample", eta=1.0, noise=True), False),
]


def step_inputs(shape, kw, tensor_alphas):
    N = shape[0]
    sample = randn(*shape)
    model_output = randn(2 * N if kw.get("guidance_scale") else N, *shape[1:], seed=1)
    noise = randn(*shape, seed=2) if kw.get("noise") else None
    if tensor_alphas:
        at, ap = torch.tensor([0.3, 0.5, 0.7][:N], dtype=torch.float32), torch.tensor([0.6, 0.8, 0.9][:N])
    else:
        at, ap = 0.4, 0.85
    return sample, model_output, noise, at, ap


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,kw,tensor_alphas", STEP_CASES)
def test_ddim_step(emulated, shape, kw, tensor_alphas, dtype):
    sample, model_output, noise, at, ap = step_inputs(shape, kw, tensor_alphas)
    kw = {k: v for k, v in kw.items() if k != "noise"}

    def fn(x, m, z):
        return genkernels.ddim_step(x, m, at, ap, noise=z, **kw)

    compare(emulated, fn, [sample, model_output, noise], dtype, "ddim_step", grad=False)
    ran("ddim_step")


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
def test_ddpm_step(emulated, variance_type):
    sample, model_output, noise, at, ap = step_inputs((2, 3, 6, 6), dict(guidance_scale=2.0, noise=True), True)

    def fn(x, m, z):
        return genkernels.ddpm_step(x, m, at, ap, noise=z, guidance_scale=2.0, clip_sample_range=1.0,
                                    variance_type=variance_type)

    compare(emulated, fn, [sample, model_output, noise], torch.float32, "ddpm_step", grad=False)


def test_ddim_step_misaligned_channels_last(emulated):
    """The scalar (non-vector) path: storage offset by one element, channels_last."""
    sample, model_output, _, at, ap = step_inputs((2, 3, 5, 5), {}, False)
    x = torch.empty(sample.numel() + 1, dtype=torch.float32)[1:].view(sample.shape).copy_(sample)
    x = x.to(memory_format=torch.channels_last)
    compare(emulated, lambda x, m: genkernels.ddim_step(x, m, at, ap), [x, model_output], torch.float32,
            "ddim_step", grad=False)


# ------------------------------------------------------------------------------------ VQ
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,K,D,cosine", [(37, 200, 20, False), (5, 3, 7, False), (70, 90, 33, True)])
def test_vq_nearest(emulated, M, K, D, cosine, dtype):
    z, cb = randn(M, D), randn(K, D, seed=1)
    idx, dist = run(emulated, lambda z, cb: genkernels.vq_nearest(z, cb, cosine=cosine),
                    [z.to(dtype), cb.to(dtype)], grad=False)[0]
    zr, cr = z.to(dtype).double(), cb.to(dtype).double()
    if cosine:
        zr = zr / zr.norm(dim=1, keepdim=True).clamp_min(1e-12)
        cr = cr / cr.norm(dim=1, keepdim=True).clamp_min(1e-12)
    d2 = ((zr[:, None, :] - cr[None, :, :]) ** 2).sum(-1)
    best = d2.min(1).values
    # the chosen code is (up to accumulation rounding) a nearest one, and its distance is reported
    chosen = d2.gather(1, idx[:, None]).squeeze(1)
    atol = 1e-4 if dtype == torch.float32 else 1e-3
    assert (chosen <= best + atol * (1 + best)).all()
    torch.testing.assert_close(dist.double(), chosen, atol=atol, rtol=atol)


def test_vq_nearest_ties_lowest_index(emulated):
    """Duplicated codes (also across K splits of the search grid): the lowest index wins."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(5, 19, generator=g)
    cb = torch.cat([base, base, base, torch.randn(130, 19, generator=g) + 10, base])  # K = 150
    z = base[[3, 1, 4, 0, 2, 3]] + 0.01 * torch.randn(6, 19, generator=g)
    (idx, _), _ = run(emulated, genkernels.vq_nearest, [z, cb], grad=False)
    assert idx.tolist() == [3, 1, 4, 0, 2, 3]
    ran("vq_nearest")
    # exact ties: z on the midpoint of two codes -> the lower index
    cb2 = torch.zeros(70, 3)
    cb2[66] = torch.tensor([1.0, 0.0, 0.0])
    cb2[0] = torch.tensor([-1.0, 0.0, 0.0])
    cb2[1:66] = 50
    cb2[67:] = 50
    (idx2, _), _ = run(emulated, genkernels.vq_nearest, [torch.zeros(2, 3), cb2], grad=False)
    assert idx2.tolist() == [0, 0]


# ------------------------------------------------------------------------------------ attention
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,H,Lq,Lk,d,token,mask", [
    (2, 2, 9, 21, 40, False, "pad"),
    (1, 2, 5, 77, 80, True, None),
    (2, 1, 130, 7, 16, False, "full_row"),
    (2, 2, 6, 1, 8, True, None),
    (1, 1, 3, 5, 160, False, "pad"),
    (1, 1, 2, 17, 256, True, None),
])
def test_attention(emulated, B, H, Lq, Lk, d, token, mask, dtype):
    q, k, v = randn(B, H, Lq, d), randn(B, H, Lk, d, seed=1), randn(B, H, Lk, d, seed=2)
    m = None
    if mask:
        m = torch.rand(B, Lk, generator=torch.Generator().manual_seed(3)) < 0.3
        m[:, 0] = False
        if mask == "full_row":
            m[-1] = True  # every key of the last sample is padding: zeros, zero gradients
    if token:  # [B, L, H*d]
        q, k, v = (t.transpose(1, 2).reshape(B, t.shape[2], H * d) for t in (q, k, v))

    def fn(q, k, v):
        return genkernels.attention(q, k, v, key_padding_mask=m, heads=H if token else None)

    out = compare(emulated, fn, [q, k, v], dtype, "attention", scale=2.0)
    if mask == "full_row":
        assert (out[0][-1] == 0).all()
    ran("attention_fwd", "attention_bwd")


# causal: Lq = Lk over two blocks of 128 rows (the tiles past a block's last row are skipped, the dk/dv
# blocks start late), Lq < Lk and Lq > Lk, with a padding mask, token layout
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("B,H,Lq,Lk,d,token,mask", [
    (1, 1, 150, 150, 8, False, None),
    (2, 2, 9, 21, 40, True, "pad"),
    (2, 1, 40, 13, 16, False, "pad"),
])
def test_attention_causal(emulated, B, H, Lq, Lk, d, token, mask, dtype):
    q, k, v = randn(B, H, Lq, d), randn(B, H, Lk, d, seed=1), randn(B, H, Lk, d, seed=2)
    m = None
    if mask:
        m = torch.rand(B, Lk, generator=torch.Generator().manual_seed(3)) < 0.3
    if token:
        q, k, v = (t.transpose(1, 2).reshape(B, t.shape[2], H * d) for t in (q, k, v))

    def fn(q, k, v):
        return genkernels.attention(q, k, v, key_padding_mask=m, heads=H if token else None, is_causal=True)

    compare(emulated, fn, [q, k, v], dtype, "attention causal", scale=2.0)
    ran("attention_fwd", "attention_bwd")


# head dims at and just past each bucket of the per-thread arrays (csrc/cuda/attention_common.cuh:
# 32, 64, 128, 256); test_attention has 8, 16, 40, 80, 160 and 256
@pytest.mark.parametrize("d", [32, 33, 64, 72, 128, 129])
def test_attention_head_dim_buckets(emulated, d):
    q, k, v = randn(1, 2, 3, d), randn(1, 2, 20, d, seed=1), randn(1, 2, 20, d, seed=2)
    m = torch.zeros(1, 20, dtype=torch.bool)
    m[0, 17:] = True
    compare(emulated, lambda q, k, v: genkernels.attention(q, k, v, key_padding_mask=m), [q, k, v],
            torch.float32, f"attention d={d}", scale=2.0)
    ran("attention_fwd", "attention_bwd")


def _attention_fwd_raw(B, H, Lq, Lk, D, claimed_bytes):
    """attention_fwd of _C_cuemu on [B, H, L, D] tensors that claim `claimed_bytes` each: a launch that
    is refused never touches them."""
    from genkernels import _native
    buf = torch.zeros(4)
    ptrs = [buf.data_ptr()] * 3 + [0] + [buf.data_ptr()] * 2 + [0]  # last: the workspace (none needed)
    sizes = [claimed_bytes] * 3 + [0] + [claimed_bytes] * 2 + [0]
    q_s, k_s = [H * Lq * D, Lq * D, D], [H * Lk * D, Lk * D, D]
    ints = [B, H, Lq, Lk, D] + q_s + k_s + k_s + q_s + [0]
    _native.load("_C_cuemu").attention_fwd(_native.DTYPE_CODES[torch.float32], ptrs, sizes, ints, [1.0], 1)


def test_launch_past_grid_limit_is_refused():
    """2^15 heads of 2^23 query rows need 2^31 blocks of 128 rows: one more than grid x allows. The
    launch is refused with an error naming the kernel and the limit, before anything runs."""
    with pytest.raises(ValueError, match=r"attn_fwd_kernel.*grid\.x = 2147483648 is outside \[1, 2147483647\]"):
        _attention_fwd_raw(1, 1 << 15, 1 << 23, 1, 1, 1 << 42)


@pytest.mark.long  # 65,536 emulated blocks of 128 threads each: about ten minutes
def test_attention_65536_heads(emulated):
    """B*H = 65,536 (video temporal attention: 2*64*64 positions x 8 heads) is past grid y's limit: the
    heads are flattened onto grid x."""
    B, H = 8192, 8
    q, k, v = randn(B, H, 1, 1), randn(B, H, 2, 1, seed=1), randn(B, H, 2, 1, seed=2)
    compare(emulated, genkernels.attention, [q, k, v], torch.float32, "attention 65536 heads", grad=False)
