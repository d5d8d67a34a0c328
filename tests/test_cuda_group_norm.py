"""The CUDA normalisation kernels (csrc/cuda/group_norm.cu) against the float64 reference.

Runs only where a GPU and genkernels._C_cuda are present. Covers what the generic op tests do not:
the Stable Diffusion / AdaIN shapes that split one group over many blocks, channels-first and
channels-last, the 16-byte and scalar load paths (odd sizes, misaligned storage), large means, the
mean/rstd outputs, both FiLM conventions (group_norm_silu's 1 + scale, adain's scale), the backward's
per-channel sums, determinism and non-default streams.
"""
import pytest
import torch

import genkernels
from genkernels import _native
from genkernels.ops import _norm

from conftest import TOL, same_layout

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or _native.load("_C_cuda") is None,
    reason="needs a CUDA GPU and genkernels._C_cuda")

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]

# (shape, groups). Stable Diffusion UNet/VAE GroupNorm shapes and AdaIN / instance-norm shapes (G = C).
TARGET = [
    ((2, 320, 64, 64), 32),
    ((2, 640, 32, 32), 32),
    ((2, 1280, 16, 16), 32),
    ((1, 128, 256, 256), 32),
    ((8, 512, 32, 32), 512),
    ((8, 256, 128, 128), 256),
]
# Odd sizes: one group, one channel per group, HW = 1 / 7, Cg = 10 / 20 / 40, C not a multiple of the
# vector width, long rows with a ragged tail, no spatial dims, 1-D and 3-D spatial.
ODD = [
    ((2, 3, 5, 7), 1),
    ((2, 3, 5, 7), 3),
    ((3, 30, 7), 3),          # Cg = 10, HW = 7
    ((2, 40, 1, 1), 2),       # Cg = 20, HW = 1
    ((1, 80, 9, 9), 2),       # Cg = 40
    ((4, 24, 3, 5), 6),       # channels-last with 3 16-byte columns (16-bit types)
    ((1, 4, 300, 301), 2),    # HW = 90300: many chunks per row, HW % 8 != 0
    ((2, 12, 4097), 3),       # 1-D, HW one past a power of two
    ((1, 6, 3, 4, 5), 3),     # 3-D spatial
    ((5, 12), 4),             # no spatial dims
    ((1, 2056, 2, 2), 8),     # C > 256 * 8: several channel tiles in channels-last
]


def cuda_gen(seed):
    return torch.Generator(device="cuda").manual_seed(seed)


def to_cl(x):
    return x if x.dim() < 3 else x.movedim(1, -1).contiguous().movedim(-1, 1)


def make(shape, dtype, seed, *, mean=0.0, params=True, film=True, channels_last=False):
    """x (dtype, rounded) and the parameters in the accumulation dtype, on the GPU."""
    g = cuda_gen(seed)
    N, C = shape[:2]
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    x = (torch.randn(shape, generator=g, device="cuda", dtype=torch.float64) * 1.5 + mean).to(dtype)
    if channels_last:
        x = to_cl(x)
    p = dict(w=None, b=None, scale=None, shift=None)
    if params:
        p["w"] = (torch.randn(C, generator=g, device="cuda", dtype=torch.float64) * 0.5 + 1).to(acc)
        p["b"] = (torch.randn(C, generator=g, device="cuda", dtype=torch.float64) * 0.5).to(acc)
    if film:
        p["scale"] = (torch.randn(N, C, generator=g, device="cuda", dtype=torch.float64) * 0.3).to(acc)
        p["shift"] = (torch.randn(N, C, generator=g, device="cuda", dtype=torch.float64) * 0.3).to(acc)
    return x, p


def d64(t):
    return None if t is None else t.double()


def ref_backward(dy, x, G, p, eps, silu, ops):
    """Float64 gradients (dx, dw, db, dscale, dshift) from float64 statistics."""
    x64, P = x.double(), [d64(p[k]) for k in ("w", "b", "scale", "shift")]
    _, m64, r64 = _norm.reference_forward(x64, G, *P, eps, silu, ops)
    return _norm.reference_backward(dy.double(), x64, m64, r64, *P, G, silu, ops)


def close(actual, expected, dtype, factor=1.0, what=""):
    """conftest's per-dtype tolerance, relative to the largest expected magnitude."""
    atol, rtol = TOL[dtype]
    scale = factor * max(1.0, float(expected.abs().max()) if expected.numel() else 1.0)
    torch.testing.assert_close(actual.double(), expected.double(), atol=atol * scale, rtol=rtol * factor,
                               msg=lambda m: f"{what}: {m}")


def variant(i):
    """(silu, one_plus_scale, params, film) cycling over the cases."""
    return [(True, True, True, True), (False, False, False, True), (True, True, True, False),
            (False, True, False, False)][i % 4]


def check_forward(shape, G, dtype, channels_last, seed, mean=0.0, y_factor=1.0):
    silu, ops, params, film = variant(seed)
    x, p = make(shape, dtype, seed, mean=mean, params=params, film=film, channels_last=channels_last)
    eps = 1e-5
    y, m, r = _norm.norm_forward("cuda", x, G, p["w"], p["b"], p["scale"], p["shift"], eps, silu, ops)
    y64, m64, r64 = _norm.reference_forward(x.double(), G, d64(p["w"]), d64(p["b"]), d64(p["scale"]),
                                            d64(p["shift"]), eps, silu, ops)
    what = f"{shape} G={G} {dtype} cl={channels_last} silu={silu} ops={ops}"
    assert y.dtype == dtype and y.shape == x.shape and same_layout(y, x), what
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    assert m.dtype == acc and r.dtype == acc and m.shape == (shape[0], G)
    # mean to a small fraction of the standard deviation (float32 sums of up to ~10^5 terms), rstd relative
    stat_tol = 1e-12 if dtype == torch.float64 else 2e-6
    std = float((1 / r64).max())
    torch.testing.assert_close(m.double(), m64, rtol=stat_tol, atol=stat_tol * 10 * std,
                               msg=lambda s: f"mean {what}: {s}")
    torch.testing.assert_close(r.double(), r64, rtol=stat_tol * 25, atol=0, msg=lambda s: f"rstd {what}: {s}")
    close(y, y64, dtype, y_factor, what=f"y {what}")
    return x, p, (silu, ops), (m, r)


def check_backward(shape, G, dtype, channels_last, seed, mean=0.0, dx_factor=1.0):
    silu, ops, params, film = variant(seed)
    x, p = make(shape, dtype, seed, mean=mean, params=params, film=film, channels_last=channels_last)
    eps = 1e-5
    _, m, r = _norm.norm_forward("cuda", x, G, p["w"], p["b"], p["scale"], p["shift"], eps, silu, ops)
    dy = torch.randn(shape, generator=cuda_gen(seed + 1000), device="cuda", dtype=torch.float64).to(dtype)
    if channels_last:
        dy = to_cl(dy)
    got = _norm.norm_backward("cuda", dy, x, m, r, p["w"], p["b"], p["scale"], p["shift"], G, eps, silu, ops)
    want = ref_backward(dy, x, G, p, eps, silu, ops)
    what = f"{shape} G={G} {dtype} cl={channels_last} silu={silu} ops={ops}"
    assert got[0].dtype == dtype and same_layout(got[0], x), what
    for name, a, b in zip(["dx", "dw", "db", "dscale", "dshift"], got, want):
        # parameter gradients are sums over N*HW (or HW) terms in float32
        close(a, b, dtype, dx_factor if name == "dx" else 4.0 * dx_factor, what=f"{name} {what}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "cl"])
def test_forward_target_shapes(dtype, channels_last):
    for i, (shape, G) in enumerate(TARGET):
        check_forward(shape, G, dtype, channels_last, seed=i)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "cl"])
def test_forward_odd_shapes(dtype, channels_last):
    for i, (shape, G) in enumerate(ODD):
        check_forward(shape, G, dtype, channels_last, seed=100 + i)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "cl"])
def test_backward_target_shapes(dtype, channels_last):
    for i, (shape, G) in enumerate(TARGET):
        check_backward(shape, G, dtype, channels_last, seed=i)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "cl"])
def test_backward_odd_shapes(dtype, channels_last):
    for i, (shape, G) in enumerate(ODD):
        check_backward(shape, G, dtype, channels_last, seed=100 + i)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "cl"])
def test_large_mean(dtype, channels_last):
    """1000 + randn: statistics stay exact (a one-pass E[x^2] - E[x]^2 in float32 would not)."""
    for i, (shape, G) in enumerate([((2, 320, 64, 64), 32), ((1, 128, 256, 256), 32), ((8, 256, 32, 32), 256),
                                    ((2, 30, 7, 7), 3)]):
        # x - mean is known to the float32 ulp at 1000 (6e-5): allow a few of those in float32
        factor = 10.0 if dtype == torch.float32 else 1.0
        check_forward(shape, G, dtype, channels_last, seed=200 + i, mean=1000.0, y_factor=factor)
        check_backward(shape, G, dtype, channels_last, seed=200 + i, mean=1000.0, dx_factor=factor)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "cl"])
def test_misaligned_storage_uses_scalar_path(dtype, channels_last):
    """Tensors starting one element into their storage cannot use 16-byte loads."""
    shape, G = (2, 64, 12, 12), 8
    N, C, H, W = shape
    buf = torch.randn(N * C * H * W + 1, generator=cuda_gen(7), device="cuda", dtype=torch.float64).to(dtype)
    x = buf[1:].view(N, H, W, C).permute(0, 3, 1, 2) if channels_last else buf[1:].view(shape)
    assert x.data_ptr() % 16 != 0
    w = torch.randn(C, generator=cuda_gen(8), device="cuda")
    y, m, r = _norm.norm_forward("cuda", x, G, w, None, None, None, 1e-5, True, True)
    y64, _, _ = _norm.reference_forward(x.double(), G, w.double(), None, None, None, 1e-5, True, True)
    close(y, y64, dtype, what="misaligned forward")
    dy = torch.randn(shape, generator=cuda_gen(9), device="cuda").to(dtype)
    got = _norm.norm_backward("cuda", dy, x, m, r, w, None, None, None, G, 1e-5, True, True)
    want = ref_backward(dy, x, G, dict(w=w, b=None, scale=None, shift=None), 1e-5, True, True)
    for name, a, b in zip(["dx", "dw", "db", "dscale", "dshift"], got, want):
        close(a, b, dtype, 1.0 if name == "dx" else 4.0, what=f"misaligned {name}")


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "cl"])
def test_deterministic(channels_last):
    """Fixed reduction order: two runs give bit-identical outputs and gradients."""
    shape, G = (2, 320, 32, 32), 32
    x, p = make(shape, torch.float32, 1, channels_last=channels_last)
    dy = torch.randn(shape, generator=cuda_gen(2), device="cuda")
    outs = []
    for _ in range(2):
        y, m, r = _norm.norm_forward("cuda", x, G, p["w"], p["b"], p["scale"], p["shift"], 1e-5, True, True)
        g = _norm.norm_backward("cuda", dy, x, m, r, p["w"], p["b"], p["scale"], p["shift"], G, 1e-5, True, True)
        outs.append((y, m, r) + tuple(g))
    for a, b in zip(*outs):
        assert torch.equal(a, b)


def test_public_ops_with_autograd_on_a_side_stream():
    """group_norm_silu and adain through the public API, forward and backward, on a non-default stream."""
    stream = torch.cuda.Stream()
    x, p = make((2, 64, 16, 16), torch.float16, 3, channels_last=True)
    x.requires_grad_()
    w = p["w"].clone().requires_grad_()
    s = p["scale"].clone().requires_grad_()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), genkernels.use_backend("cuda"):
        y = genkernels.group_norm_silu(x, 16, w, p["b"], scale=s, shift=p["shift"])
        gy = torch.ones_like(y)
        gx, gw, gs = torch.autograd.grad(y, [x, w, s], gy)
        a = genkernels.adain(x.detach(), p["scale"] + 1, p["shift"])
    stream.synchronize()
    x64 = x.detach().double().requires_grad_()
    w64, s64 = w.detach().double().requires_grad_(), s.detach().double().requires_grad_()
    y64 = genkernels.group_norm_silu_reference(x64, 16, w64, p["b"].double(), scale=s64, shift=p["shift"].double())
    want = torch.autograd.grad(y64, [x64, w64, s64], gy.double())
    close(y, y64, torch.float16, what="y")
    for name, got, ref in zip(["x", "w", "scale"], [gx, gw, gs], want):
        close(got, ref, torch.float16, 1.0 if name == "x" else 4.0, what=f"grad {name}")
    a64 = genkernels.adain_reference(x.detach().double(), (p["scale"] + 1).double(), p["shift"].double())
    close(a, a64, torch.float16, what="adain")


def test_scratch_counts_in_torchs_memory_statistics(monkeypatch):
    """The kernels' scratch `workspace` comes from torch's allocator (genkernels/_native.py), so
    torch.cuda's peak-memory statistics, and with them benchkit.peak_extra_bytes, count it: the call's
    peak is at least its output plus the workspace the kernel asked for."""
    mod, asked = _native.load("_C_cuda"), []

    class Recording:  # _C_cuda, recording the sizes its kernels ask for
        def __getattr__(self, name):
            fn = getattr(mod, name)
            if not name.endswith("_workspace"):
                return fn
            return lambda *args: asked.append(fn(*args)) or asked[-1]

    monkeypatch.setattr(_native, "load", lambda name, real=_native.load: Recording() if name == "_C_cuda" else real(name))
    x = torch.randn(2, 320, 64, 64, device="cuda")
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    with genkernels.use_backend("cuda"):
        y = genkernels.group_norm_silu(x, 32)
    torch.cuda.synchronize()
    assert len(asked) == 1 and asked[0] > 0
    assert torch.cuda.max_memory_allocated() - base >= y.numel() * y.element_size() + asked[0]
