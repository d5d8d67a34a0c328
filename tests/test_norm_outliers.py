"""Group statistics that survive outliers: a border pixel far from the rest (ordinary in conv nets) must
not cost the statistics their precision, in either layout, on any path (channels-first rows, small
instance-norm rows, channels-last chunks). Compared with the float64 reference of the same input."""
import pytest
import torch

import genkernels as gk
from conftest import compiled_backends

BACKENDS = [b for b in compiled_backends("cpu")]


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
