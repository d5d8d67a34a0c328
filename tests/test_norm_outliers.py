"""Group statistics that survive outliers: a border pixel far from the rest (ordinary in conv nets) must
not cost the statistics their precision, in either layout, on any path (channels-first rows, small
instance-norm rows, channels-last chunks). Compared with the float64 reference of the same input.

The first tests size their maps for the cpu kernels' blocks. The GPU backends (triton through its
interpreter, cuda through the emulator _C_cuemu) run tiny maps with their plans shrunk so that each
statistic still crosses every split the kernels use: several tiles per program and several programs
per channel (triton), several per-thread blocks, warps / rows of threads and chunks per channel (cuda).
"""
import pytest
import torch

import genkernels as gk
from genkernels.ops import _norm
from genkernels.triton import group_norm as triton_gn
from conftest import assert_close, compiled_backends
from cuda_emu_fixture import emulated, needs_cuemu  # noqa: F401 (emulated: a fixture)

BACKENDS = [b for b in compiled_backends("cpu") if b != "triton"]  # (triton: the tiny maps below)
GPU_BACKENDS = [b for b in compiled_backends("cpu") if b == "triton"] + [pytest.param("cuda", marks=needs_cuemu)]


def ref64(x, G, act, **kw):
    return gk.group_norm_silu_reference(x.double(), G, act=act, **{k: v.double() for k, v in kw.items()})


def check(backend, x, G, act="silu", atol=1e-4, **kw):
    with gk.use_backend(backend):
        y = gk.group_norm_silu(x, G, act=act, **kw)
    want = ref64(x, G, act, **kw)
    err = (y.double() - want).abs().max().item()
    assert err <= atol, f"{backend}: max error {err:.3g} > {atol:.3g}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cl", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("seed", [0, 1])
def test_outlier_at_first_pixel(backend, cl, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 64, 24, 24, generator=g)
    x[:, :, 0, 0] = 100
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    check(backend, x, 8)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cl", [False, True], ids=["nchw", "channels_last"])
def test_huge_outlier_single_group(backend, cl):
    x = torch.randn(1, 4, 128, 128, generator=torch.Generator().manual_seed(3))
    x[:, :, 0, 0] = 1e4
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    check(backend, x, 1, act=None, atol=2e-4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("hw", [4, 7, 16, 40])
@pytest.mark.parametrize("where", ["first", "middle"])
def test_outlier_instance_norm_rows(backend, hw, where):
    """Instance norm / adain on small and mid-sized maps (the small-row paths, 16-row batches)."""
    x = torch.randn(4, 48, hw, hw, generator=torch.Generator().manual_seed(hw)) + 50
    i = 0 if where == "first" else hw // 2
    x[:, ::3, i, i] = 3e3
    s, b = torch.randn(4, 48), torch.randn(4, 48)
    with gk.use_backend(backend):
        y = gk.adain(x, s, b)
    want = gk.adain_reference(x.double(), s.double(), b.double())
    err = (y.double() - want).abs().max().item()
    assert err <= 1e-4 * (1 + want.abs().max().item()), f"max error {err:.3g}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_outliers_with_large_mean_channels_last(backend):
    x = torch.randn(2, 32, 33, 17, generator=torch.Generator().manual_seed(5)) * 0.1 + 1000
    x[:, :, 0, 0] = -2000
    x[:, :, 20, 3] = 5000
    check(backend, x.contiguous(memory_format=torch.channels_last), 4, atol=2e-4)
    check(backend, x, 4, atol=2e-4)


# ------------------------------------------------------------------ GPU backends on tiny, split maps
# The map of each backend: the smallest that still splits its statistics (triton, with the plan shrunk
# below: 3-8 tiles per program and 2-6 programs per channel; cuda with 2 emulated SMs: 2-10 chunks per
# channel, several per-thread blocks and warps or rows of threads in each).
MAP = {"triton": (16, 24), "cuda": (32, 40)}


@pytest.fixture
def gpu_backend(request, monkeypatch):
    """The backend under test (triton through the interpreter, cuda through the emulator)."""
    name = request.param
    if name == "cuda":
        monkeypatch.setenv("GK_EMU_SM_COUNT", "2")
        return request.getfixturevalue("emulated")
    monkeypatch.setattr(triton_gn, "_MAX_BLOCK_HW", 64)
    monkeypatch.setattr(triton_gn, "_TILE", 256)
    monkeypatch.setattr(triton_gn, "_TARGET_PROGRAMS", 4)
    return name


# The spread of the large-mean data: a few units in the last place of 1e4 in the input type, so that
# 16-bit inputs are not mostly ties.
SPREAD = {torch.float32: 1.0, torch.float16: 16.0, torch.bfloat16: 128.0}


def tiny_input(backend, case, C, dtype, cl, seed=0):
    H, W = MAP[backend]
    x = torch.randn(1, C, H, W, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    if case == "first":       # the border pixel
        x[:, :, 0, 0] = 100
    elif case == "first_1e4":
        x[:, :, 0, 0] = 1e4
    elif case == "middle":
        x[:, ::3, H // 2, W // 3] = 1e4
    else:                     # large mean
        x = x * SPREAD[dtype] + 1e4
    x = x.to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if cl else x


F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16
# (case, G, act, dtype): every case in float32, the 16-bit types on a few (their tolerance is looser)
GPU_CASES = [("first", 32, "silu", F32), ("first_1e4", 1, None, F32), ("middle", 1, None, F32),
             ("middle", 32, "silu", F32), ("mean", 1, None, F32),
             ("first_1e4", 1, None, F16), ("mean", 1, None, F16),
             ("middle", 1, None, BF16), ("mean", 1, None, BF16)]


@pytest.mark.parametrize("gpu_backend", GPU_BACKENDS, indirect=True)
@pytest.mark.parametrize("cl", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("case,G,act,dtype", GPU_CASES, ids=lambda v: str(v).replace("torch.", ""))
def test_gpu_backends_outliers(gpu_backend, cl, case, G, act, dtype):
    C = 8 if G == 1 else 32
    x = tiny_input(gpu_backend, case, C, dtype, cl)
    y, mean, rstd = _norm.norm_forward(gpu_backend, x, G, None, None, None, None, 1e-5, act == "silu", False)
    y64, m64, r64 = _norm.reference_forward(x.double(), G, None, None, None, None, 1e-5, act == "silu", False)
    what = f"{gpu_backend} {case} G={G} {dtype} cl={cl}"
    assert_close(y, y64, dtype, what=f"y {what}")
    # statistics to a few float32 units (of the standard deviation for the mean)
    torch.testing.assert_close(mean.double(), m64, rtol=2e-7, atol=1e-6 / r64.min().item(),
                               msg=lambda m: f"mean {what}: {m}")
    torch.testing.assert_close(rstd.double(), r64, rtol=1e-6, atol=0, msg=lambda m: f"rstd {what}: {m}")


@pytest.mark.parametrize("gpu_backend", GPU_BACKENDS, indirect=True)
@pytest.mark.parametrize("cl", [False, True], ids=["nchw", "channels_last"])
def test_gpu_backends_outlier_backward(gpu_backend, cl):
    """The backward reuses the forward's mean and rstd: gradients with an outlier at the first pixel."""
    x = tiny_input(gpu_backend, "first", 16, torch.float32, cl).requires_grad_()
    w = (1 + 0.5 * torch.randn(16, generator=torch.Generator().manual_seed(1))).requires_grad_()
    dy = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    with gk.use_backend(gpu_backend):
        got = torch.autograd.grad(gk.group_norm_silu(x, 8, w), [x, w], dy)
    x64, w64 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    want = torch.autograd.grad(gk.group_norm_silu_reference(x64, 8, w64), [x64, w64], dy.double())
    for name, a, b in zip(["dx", "dw"], got, want):
        # dw: sums over the map's positions
        assert_close(a, b, torch.float32, scale=1.0 if name == "dx" else 10.0, what=f"{gpu_backend} {name}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cl", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("shape,G", [((2, 640, 2, 2), 32), ((1, 640, 3, 3), 2), ((2, 96, 7, 9), 4), ((1, 40, 8, 8), 5)])
def test_outlier_small_maps_with_film(backend, cl, shape, G):
    """UNet low-resolution levels: channels-first rows shorter than the kernels' row loops (applied in
    runs of several channels, one run or several per group, the last one partial) and channels-last."""
    g = torch.Generator().manual_seed(shape[1] + G)
    x = torch.randn(shape, generator=g) + 30
    x[:, ::5, 0, 0] = 2e3
    N, C = shape[:2]
    kw = dict(weight=torch.randn(C, generator=g), bias=torch.randn(C, generator=g),
              scale=torch.randn(N, C, generator=g), shift=torch.randn(N, C, generator=g))
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    check(backend, x, G, atol=2e-4, **kw)
