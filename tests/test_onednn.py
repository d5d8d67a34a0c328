"""genkernels.models.onednn: Conv2d / Linear with weights reordered once for CPU inference compute what
nn.Conv2d / nn.Linear compute, notice weight changes, and leave training, copies and state_dicts alone."""
import copy

import pytest
import torch
from torch import nn

import genkernels
from genkernels.models.onednn import SWAPS, Conv2d, Linear, use_onednn

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")

CONVS = [dict(in_channels=8, out_channels=16, kernel_size=3, padding=1),
         dict(in_channels=8, out_channels=8, kernel_size=3, stride=2, padding=1, bias=False),
         dict(in_channels=8, out_channels=12, kernel_size=1),
         dict(in_channels=8, out_channels=8, kernel_size=3, padding=2, dilation=2, groups=4)]


def _twins(plain: nn.Module):
    """plain, and a copy whose every Conv2d / Linear is this file's class (whatever use_onednn would pick)."""
    torch.manual_seed(0)
    for p in plain.parameters():
        nn.init.normal_(p)
    fast = copy.deepcopy(plain)
    for m in fast.modules():
        if type(m) in SWAPS:
            m.__class__ = SWAPS[type(m)]
    return plain, fast


def _reordered(m):
    return len(m.__dict__.get("_onednn", {}))


@pytest.mark.parametrize("kw", CONVS)
def test_conv_inference_matches_and_uses_reordered_weight(kw):
    plain, fast = _twins(nn.Conv2d(**kw))
    assert type(fast) is Conv2d
    x = torch.randn(2, 8, 9, 7)
    with torch.no_grad():
        y = fast(x)
        torch.testing.assert_close(y, plain(x), rtol=1e-5, atol=1e-4)
    # a 1x1 convolution of 126 pixels is one GEMM (no reordered weight)
    assert _reordered(fast) == (0 if kw["kernel_size"] == 1 else 1)
    assert y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("pixels", [(1, 4, 4), (2, 4, 4), (2, 2, 2)])
def test_pointwise_conv_is_a_gemm_from_32_pixels(pixels):
    """With torch's kernels (the reference backend: no conv_rows), 1x1 convolutions of >= 32 pixels (N*H*W)
    run as F.linear, smaller ones on oneDNN; both match."""
    n, h, w = pixels
    plain, fast = _twins(nn.Conv2d(8, 12, 1))
    x = torch.randn(n, 8, h, w)
    with torch.no_grad(), genkernels.use_backend("reference"):
        y = fast(x)
        torch.testing.assert_close(y, plain(x), rtol=1e-5, atol=1e-4)
    assert _reordered(fast) == (0 if n * h * w >= 32 else 1)
    assert y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("features", [(24, 40), (24, 96), (256, 2048), (2048, 256)])
@pytest.mark.parametrize("shape", [(5, -1), (2, 3, -1), (1, -1), (3, 40, -1)])
def test_linear_inference_matches(shape, features):
    """Beyond conv_rows' 32 rows, only layers 4x wider out than in with 2^19+ weights use oneDNN (where
    it was faster than F.linear)."""
    plain, fast = _twins(nn.Linear(*features))
    x = torch.randn(*shape[:-1], features[0])
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-5, atol=1e-4)
    assert _reordered(fast) == (x.numel() // features[0] > 32 and features == (256, 2048))


def test_use_onednn_swaps_every_conv_and_linear():
    model = nn.Sequential(nn.Conv2d(4, 4, 1), nn.Linear(256, 2048), nn.Linear(8, 8), nn.GroupNorm(2, 4))
    use_onednn(model)
    assert [type(m) for m in model] == [Conv2d, Linear, Linear, nn.GroupNorm]


@pytest.mark.parametrize("make", [lambda: nn.Conv2d(4, 6, 3, padding=1), lambda: nn.Linear(4, 6)])
def test_weight_changes_are_seen(make):
    plain, fast = _twins(make())
    x = torch.randn(2, 4, 5, 5) if isinstance(plain, nn.Conv2d) else torch.randn(3, 4)
    with torch.no_grad():
        fast(x)
        for m in (plain, fast):
            m.weight.mul_(-2.0)            # in place (an optimizer step)
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-5, atol=1e-4)
        w = torch.randn_like(plain.weight)
        plain.weight, fast.weight = nn.Parameter(w), nn.Parameter(w.clone())   # replaced
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-5, atol=1e-4)


def test_training_gradients_copies_and_state_dict():
    plain, fast = _twins(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 25, 2)))
    x = torch.randn(2, 3, 5, 5)
    with torch.no_grad():
        fast(x)
    assert _reordered(fast[0]) == 1 and _reordered(fast[2]) == 0   # the linear's 2 rows: conv_rows, on the weight itself
    plain(x).square().sum().backward()
    fast(x).square().sum().backward()
    for a, b in zip(plain.parameters(), fast.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-4)
    assert list(fast.state_dict()) == list(plain.state_dict())
    twin = copy.deepcopy(fast)                     # the opaque reordered weights stay behind
    assert _reordered(twin[0]) == 0
    with torch.no_grad():
        torch.testing.assert_close(twin(x), plain(x), rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(fast.double()(x.double()), plain.double()(x.double()))   # other dtypes: torch's own
    assert _reordered(fast[0]) == 0


def test_compile_fullgraph_traces_the_torch_forward():
    """Under torch.compile the layers trace as torch's own (no graph break: fullgraph=True compiles)."""
    conv, fast_conv = _twins(nn.Conv2d(4, 6, 3, padding=1))
    lin, fast_lin = _twins(nn.Linear(4, 6))
    for plain, fast, x in ((conv, fast_conv, torch.randn(2, 4, 5, 5)), (lin, fast_lin, torch.randn(3, 4))):
        with torch.no_grad():
            y = torch.compile(fast, fullgraph=True, backend="eager")(x)
            torch.testing.assert_close(y, plain(x), rtol=1e-5, atol=1e-5)
        assert _reordered(fast) == 0
