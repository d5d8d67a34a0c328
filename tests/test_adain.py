"""adain and the instance-norm modules: every backend against the float64 reference."""
import pytest
import torch
import torch.nn.functional as F

import genkernels
from genkernels.nn import AdaIN, InstanceNorm2d

from conftest import DEVICE, assert_close, compiled_backends, same_layout

BACKENDS = ["reference"] + compiled_backends()
# the last two: rows of a multiple of 16 elements, 16 rows at a time plus a remainder (CPU small maps)
SHAPES = [(2, 8, 6, 6), (3, 5, 7, 3), (2, 4, 9), (1, 3, 2, 3, 4), (2, 6, 1, 1), (3, 7, 4, 4), (2, 40, 8, 8)]


def make(shape, dtype, mean=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    N, C = shape[:2]
    pd = torch.float64 if dtype == torch.float64 else torch.float32
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 2 + mean).to(dtype).to(DEVICE)
    s = (torch.randn(N, C, generator=g) + 1).to(DEVICE, pd)
    b = torch.randn(N, C, generator=g).to(DEVICE, pd)
    return x, s, b


def cl(x):
    return x.movedim(1, -1).contiguous().movedim(-1, 1)


def small(backend):
    return SHAPES[:3] if backend == "triton" and DEVICE.type == "cpu" else SHAPES


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "cl"])
def test_forward_matches_reference(backend, dtype, channels_last):
    for i, shape in enumerate(small(backend)):
        x, s, b = make(shape, dtype, seed=i)
        if channels_last:
            x = cl(x)
        with genkernels.use_backend(backend):
            y = genkernels.adain(x, s, b)
        assert y.dtype == dtype and same_layout(y, x)
        assert_close(y, genkernels.adain_reference(x.double(), s.double(), b.double()), dtype,
                     what=f"{backend} {shape}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(2, 4, 8, 8), (3, 7, 4, 4)], ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "cl"])
def test_large_mean(backend, shape, channels_last):
    x, s, b = make(shape, torch.float32, mean=1000.0)
    if channels_last:
        x = cl(x)
    with genkernels.use_backend(backend):
        y = genkernels.adain(x, s, b)
    assert_close(y, genkernels.adain_reference(x.double(), s.double(), b.double()), torch.float32, scale=10)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "cl"])
def test_backward_matches_reference(backend, dtype, channels_last):
    for i, shape in enumerate(small(backend)[:3]):
        x, s, b = make(shape, dtype, seed=5 + i)
        if channels_last:
            x = cl(x)
        leaves = [x.requires_grad_(), s.requires_grad_(), b.requires_grad_()]
        gy = torch.randn(shape, dtype=dtype, device=DEVICE)
        with genkernels.use_backend(backend):
            got = torch.autograd.grad(genkernels.adain(*leaves), leaves, gy)
        l64 = [t.detach().double().requires_grad_() for t in leaves]
        want = torch.autograd.grad(genkernels.adain_reference(*l64), l64, gy.double())
        for name, a, w in zip(("x", "style_scale", "style_bias"), got, want):
            assert_close(a, w, dtype, scale=4, what=f"grad {name} {backend} {shape}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("via_op", [False, True], ids=["eager", "registered_op"])
def test_gradcheck_and_double_backward(backend, via_op):
    """Double backward works (StyleGAN's path-length regularisation differentiates through adain), on
    both autograd paths: eager calls and the registered op (compiled / traced code)."""
    x, s, b = make((2, 3, 3, 2), torch.float64)
    leaves = [x.requires_grad_(), s.requires_grad_(), b.requires_grad_()]

    def f(*a):
        with genkernels.use_backend(backend):
            return torch.ops.genkernels.adain(*a, 1e-5)[0] if via_op else genkernels.adain(*a)

    fast = backend == "triton" and DEVICE.type == "cpu"  # the interpreter is slow
    assert torch.autograd.gradcheck(f, leaves, fast_mode=fast)
    assert torch.autograd.gradgradcheck(f, leaves, fast_mode=fast)


def test_path_length_penalty_style_second_order():
    """A gradient penalty's gradient w.r.t. the style matches the reference."""
    x, s, b = make((2, 4, 5, 5), torch.float64)
    s.requires_grad_()
    xr = x.clone().requires_grad_()
    outs = []
    for fn in (genkernels.adain, genkernels.adain_reference):
        xi = xr.detach().clone().requires_grad_()
        y = fn(xi, s, b)
        (gx,) = torch.autograd.grad((y * y.detach()).sum(), xi, create_graph=True)
        (gs,) = torch.autograd.grad(gx.square().sum(), s)
        outs.append(gs)
    torch.testing.assert_close(outs[0], outs[1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty(backend):
    x = torch.randn(0, 4, 3, 3, device=DEVICE, requires_grad=True)
    s = torch.randn(0, 4, device=DEVICE, requires_grad=True)
    with genkernels.use_backend(backend):
        y = genkernels.adain(x, s, s)
        y.sum().backward()
    assert y.shape == x.shape and x.grad.shape == x.shape and s.grad.shape == s.shape


@pytest.mark.parametrize("backend", compiled_backends())
def test_opcheck(backend):
    x, s, b = make((2, 4, 3, 5), torch.float32)
    with genkernels.use_backend(backend):
        torch.library.opcheck(torch.ops.genkernels.adain.default, (x, s, b, 1e-5))
        torch.library.opcheck(torch.ops.genkernels.adain.default, (cl(x), s, b, 1e-5))


def test_compile_fullgraph():
    torch._dynamo.reset()
    x, s, b = make((2, 4, 6, 6), torch.float32)
    f = torch.compile(lambda x, s, b: genkernels.adain(x, s, b) * 2, fullgraph=True)
    torch.testing.assert_close(f(x, s, b), genkernels.adain(x, s, b) * 2)


def test_errors_name_the_argument():
    x, s, b = make((2, 4, 3, 3), torch.float32)
    with pytest.raises(ValueError, match="style_scale"):
        genkernels.adain(x, s[:, :3], b)
    with pytest.raises(ValueError, match="style_bias"):
        genkernels.adain(x, s, b[:1])
    with pytest.raises(TypeError, match="style_scale"):
        genkernels.adain(x, None, b)
    with pytest.raises(ValueError, match="`x`"):
        genkernels.adain(x[:, :, 0, 0], s, b)
    with pytest.raises(TypeError, match="`x`"):
        genkernels.adain(x.long(), s, b)
    with pytest.raises(TypeError, match="style_bias"):
        genkernels.adain(x, s, b.int())


def test_instance_norm_module_is_drop_in():
    ref = torch.nn.InstanceNorm2d(6, affine=True).to(DEVICE)
    with torch.no_grad():
        ref.weight.normal_()
        ref.bias.normal_()
    m = InstanceNorm2d(6, affine=True).to(DEVICE)
    assert list(m.state_dict()) == list(ref.state_dict())
    m.load_state_dict(ref.state_dict())
    x = torch.randn(3, 6, 7, 5, device=DEVICE) + 4
    torch.testing.assert_close(m(x), ref(x), atol=1e-5, rtol=1e-5)
    plain = InstanceNorm2d(6).to(DEVICE)
    torch.testing.assert_close(plain(x), F.instance_norm(x), atol=1e-5, rtol=1e-5)


def test_adain_module():
    torch.manual_seed(0)
    m = AdaIN(6, 10).to(DEVICE)
    x = torch.randn(2, 6, 5, 5, device=DEVICE)
    w = torch.randn(2, 10, device=DEVICE)
    scale, bias = m.style(w).chunk(2, 1)
    want = F.instance_norm(x) * scale[:, :, None, None] + bias[:, :, None, None]
    torch.testing.assert_close(m(x, w), want, atol=1e-5, rtol=1e-5)
    # a fresh projection is centred on the identity style
    torch.testing.assert_close(m.style.bias[:6], torch.ones(6, device=DEVICE))
