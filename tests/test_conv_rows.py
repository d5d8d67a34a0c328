"""The conv_rows CPU kernel (csrc/cpu/kernels/conv_rows.cpp: convolutions and linear layers with few output
rows) against torch's convolution in float64, and genkernels.models.onednn's choice of it."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import genkernels
from genkernels import _native
from genkernels.models import onednn

pytestmark = pytest.mark.skipif(_native.load("_C") is None, reason="genkernels._C not built")


def conv_rows(x, w, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1)):
    """conv_rows of NCHW x and [N, C, KH, KW] w, returned NCHW (a channels_last view)."""
    Ho, Wo = ((x.shape[2 + d] + 2 * padding[d] - dilation[d] * (w.shape[2 + d] - 1) - 1) // stride[d] + 1
              for d in (0, 1))
    y = onednn._conv_rows(x.permute(0, 2, 3, 1).contiguous(), w.permute(0, 2, 3, 1).contiguous(), bias,
                          Ho, Wo, stride, padding, dilation)
    return y.permute(0, 3, 1, 2)


def reference(x, w, bias, stride, padding, dilation):
    return F.conv2d(x.double(), w.double(), None if bias is None else bias.double(), stride, padding, dilation)


def close(y, ref, what):
    assert y.shape == ref.shape, what
    tol = 2e-6 * max(1.0, ref.abs().max().item()) * 4
    err = (y.double() - ref).abs().max().item() if y.numel() else 0.0
    assert err <= tol, f"{what}: max error {err:.3g} > {tol:.3g}"


# (B, C, N, H, W, (KH, KW), stride, padding, dilation): every tail of the 4-row, 3-channel-block and
# vector-of-C blocking, maps down to 1x1, non-square kernels, strides, padding beyond the kernel, dilation
GEOMETRIES = [
    (2, 40, 7, 2, 2, (3, 3), 1, 1, 1),
    (2, 17, 25, 4, 4, (3, 3), 1, 1, 1),
    (1, 8, 4, 4, 4, (3, 3), 2, 1, 1),
    (3, 7, 3, 3, 5, (2, 3), (1, 2), (1, 0), 1),
    (2, 33, 5, 5, 5, (3, 3), 1, 2, 2),
    (1, 1, 1, 1, 1, (1, 1), 1, 0, 1),
    (5, 24, 13, 1, 1, (1, 1), 1, 0, 1),
    (2, 9, 2, 1, 1, (3, 3), 1, 1, 1),
    (2, 16, 6, 3, 3, (5, 5), 1, 2, 1),
    (1, 12, 8, 6, 6, (3, 3), 3, 0, 1),
]


def _pair(v):
    return (v, v) if isinstance(v, int) else v


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
@pytest.mark.parametrize("bias", [False, True])
def test_matches_torch_convolution(geometry, bias):
    B, C, N, H, W, k, s, p, d = geometry
    s, p, d = _pair(s), _pair(p), _pair(d)
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(B, C, H, W, generator=g), torch.randn(N, C, *k, generator=g)
    b = torch.randn(N, generator=g) if bias else None
    close(conv_rows(x, w, b, s, p, d), reference(x, w, b, s, p, d), str(geometry))


def test_large_values_and_threads_give_the_same_bits():
    """Outputs do not depend on the thread count (threads split the output channels), values of 1e4 with
    an offset stay within float32 rounding of the float64 result."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 64, 4, 4, generator=g) * 1e4 + 3e4
    w, b = torch.randn(100, 64, 3, 3, generator=g), torch.randn(100, generator=g)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = conv_rows(x, w, b, padding=(1, 1))
        torch.set_num_threads(2)
        two = conv_rows(x, w, b, padding=(1, 1))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)
    close(one, reference(x, w, b, 1, 1, 1), "large values")


def test_non_finite_values_and_padding():
    """NaN / inf in the input reach exactly the outputs that read them; a non-finite weight tap reaches only
    the outputs where that tap reads the map, not where it falls on zero padding (left out, never x 0)."""
    x = torch.ones(1, 2, 2, 2)
    x[0, 1, 0, 0] = float("nan")
    w = torch.ones(3, 2, 3, 3)
    y = conv_rows(x, w, padding=(1, 1))
    assert torch.isnan(y).all()           # every output of a 2x2 map with a 3x3 kernel reads pixel (0, 0)
    x = torch.ones(1, 2, 3, 3)
    w = torch.ones(1, 2, 3, 3)
    w[0, 0, 0, 0] = float("inf")          # the top-left tap: for output (0, 0) it falls on padding
    y = conv_rows(x, w, padding=(1, 1))[0, 0]
    assert torch.isfinite(y[0, :]).all() and torch.isfinite(y[:, 0]).all()
    assert torch.isinf(y[1:, 1:]).all()


def test_empty_sizes():
    x, w = torch.randn(0, 4, 2, 2), torch.randn(3, 4, 3, 3)
    assert conv_rows(x, w, padding=(1, 1)).shape == (0, 3, 2, 2)
    x, w = torch.randn(2, 4, 2, 2), torch.randn(0, 4, 3, 3)
    assert conv_rows(x, w, padding=(1, 1)).shape == (2, 0, 2, 2)
    x, w, b = torch.randn(2, 0, 2, 2), torch.randn(3, 0, 1, 1), torch.randn(3)
    torch.testing.assert_close(conv_rows(x, w, b), b.view(1, 3, 1, 1).expand(2, 3, 2, 2))


def _native_call(x, w, b, y, ints, dtype=0):
    mod = _native.load("_C")
    ts = [x, w, b, y]
    mod.conv_rows(dtype, [0 if t is None else t.data_ptr() for t in ts], [_native.nbytes(t) for t in ts], ints, [], 1)


@pytest.mark.parametrize("case, message", [
    ("short_w", "`w`"), ("short_x", "`x`"), ("short_y", "`y`"), ("short_bias", "`bias`"),
    ("negative", ">= 0"), ("stride0", ">= 1"), ("float64", "float32 only"), ("huge", "geometry out of range"),
])
def test_native_side_refuses_bad_arguments(case, message):
    """The native entry point checks every extent before touching memory: a ValueError, never a crash."""
    x, w, b, y = torch.randn(2, 2, 2, 8), torch.randn(4, 3, 3, 8), torch.randn(4), torch.empty(2, 2, 2, 4)
    ints = [2, 2, 2, 8, 4, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1]   # B H W C N KH KW Ho Wo strides pads dilations
    dtype = 0
    if case == "short_w":
        w = w[:3]
    elif case == "short_x":
        x = x[:1]
    elif case == "short_y":
        y = y[:, :1]
    elif case == "short_bias":
        b = b[:2]
    elif case == "negative":
        ints[3] = -8
    elif case == "stride0":
        ints[9] = 0
    elif case == "float64":
        dtype = 3
    elif case == "huge":
        ints[7] = 1 << 50
    with pytest.raises(ValueError, match=message):
        _native_call(x, w, b, y, ints, dtype)
    _native_call(torch.randn(2, 2, 2, 8), torch.randn(4, 3, 3, 8), torch.randn(4), torch.empty(2, 2, 2, 4),
                 [2, 2, 2, 8, 4, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1])   # the valid call runs


# ------------------------------------------------------------------------ onednn's layers choose it by rows
@pytest.fixture
def calls(monkeypatch):
    """The number of conv_rows calls made through onednn (a list of one counter)."""
    count = [0]
    real = onednn._conv_rows

    def counted(*args):
        count[0] += 1
        return real(*args)

    monkeypatch.setattr(onednn, "_conv_rows", counted)
    return count


@pytest.mark.parametrize("shape, own", [((2, 8, 2, 2), True), ((2, 8, 4, 4), True), ((3, 8, 4, 4), False),
                                        ((1, 8, 5, 6), True), ((2, 8, 9, 7), False)])
@pytest.mark.parametrize("channels_last_weight", [False, True])
def test_conv2d_takes_conv_rows_up_to_32_output_rows(calls, shape, own, channels_last_weight):
    conv = nn.Conv2d(8, 12, 3, padding=1)
    torch.manual_seed(0)
    if channels_last_weight:
        conv = conv.to(memory_format=torch.channels_last)
    plain = nn.Conv2d(8, 12, 3, padding=1)
    plain.load_state_dict(conv.state_dict())
    onednn.use_onednn(nn.Sequential(conv))
    x = torch.randn(*shape[:-1], 2 * shape[-1])[..., ::2]   # a strided NCHW input
    with torch.no_grad():
        y = conv(x)
        torch.testing.assert_close(y, plain(x), rtol=1e-5, atol=1e-5)
        assert calls[0] == own
        assert y.is_contiguous(memory_format=torch.channels_last)
        conv.weight.mul_(-2.0)            # in place (an optimizer step): the cached [N, KH, KW, C] copy is redone
        plain.weight.mul_(-2.0)
        torch.testing.assert_close(conv(x), plain(x), rtol=1e-5, atol=1e-5)
        with genkernels.use_backend("reference"):   # torch's kernels only
            torch.testing.assert_close(conv(x), plain(x), rtol=1e-5, atol=1e-5)
        assert calls[0] == 2 * own


@pytest.mark.parametrize("shape, own", [((2, 24), True), ((2, 16, 24), True), ((33, 24), False), ((1, 24), True)])
def test_linear_takes_conv_rows_up_to_32_rows(calls, shape, own):
    plain = nn.Linear(24, 40)
    fast = nn.Linear(24, 40)
    fast.load_state_dict(plain.state_dict())
    onednn.use_onednn(nn.Sequential(fast))
    x = torch.randn(*shape[:-1], 2 * shape[-1])[..., ::2]   # a strided input
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-5, atol=1e-5)
    assert calls[0] == own and type(fast) is onednn.Linear


def test_wrong_input_channels_get_torchs_error(calls):
    conv, lin = nn.Conv2d(8, 4, 3, padding=1), nn.Linear(8, 4)
    onednn.use_onednn(nn.Sequential(conv, lin))
    with torch.no_grad(), pytest.raises(RuntimeError):
        conv(torch.randn(1, 6, 2, 2))
    with torch.no_grad(), pytest.raises(RuntimeError):
        lin(torch.randn(2, 6))
    assert calls[0] == 0
