"""SiLU and its derivative at extreme pre-activations, on every backend. Each CPU ISA has its own exp
(the AVX-512 build a vector one with a clamped argument), so test_cpu_isa.py runs this file under
every ISA the machine has: 1 + e^-z must overflow to inf where it does in float32, or silu(-1e38) is
-1.7 instead of -0."""
import pytest
import torch

import genkernels as gk
from conftest import compiled_backends

BACKENDS = ["reference"] + compiled_backends("cpu")
Z = [-float("inf"), -3.4e38, -1e38, -1e31, -1e10, -100.0, -88.8, -88.7, -87.5, -50.0, -1.0, 0.0, 1.0,
     50.0, 87.5, 88.7, 88.8, 100.0, 1e10, 3.4e38, float("inf")]


def _run(fn, cl):
    # weight 0 makes the normalised term 0, so each channel's pre-activation is its bias; 32 channels and
    # 8 x 8 pixels fill the 16-lane loops of both layouts (channels_last vectorises over channels)
    C = 32
    bias = torch.tensor((Z * 2)[:C], requires_grad=True)
    weight = torch.zeros(C, requires_grad=True)
    x = torch.randn(2, C, 8, 8)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    y = fn(x, 8, weight, bias)
    y.backward(torch.ones_like(y))
    return y.detach(), bias.grad


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cl", [False, True])
def test_silu_and_its_gradient_at_extreme_preactivations(backend, cl):
    torch.manual_seed(0)
    want_y, want_db = _run(gk.group_norm_silu_reference, cl)
    with gk.use_backend(backend):
        torch.manual_seed(0)
        y, db = _run(gk.group_norm_silu, cl)
    torch.testing.assert_close(y, want_y, rtol=1e-5, atol=1e-6, equal_nan=True)
    torch.testing.assert_close(db, want_db, rtol=1e-5, atol=1e-4, equal_nan=True)
