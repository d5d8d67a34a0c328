"""Dense layouts that are neither NC* nor N*C (transposed spatial dims, 5-D permutes): the real ops
return contiguous outputs for them, and their fake implementations must say so (torch.compile checks
the strides the fake promises against what the op returns)."""
import pytest
import torch

import genkernels as gk
from conftest import compiled_backends

BACKENDS = [b for b in compiled_backends("cpu") if b != "triton"] or ["reference"]


def odd_layouts():
    return {
        "transposed hw": torch.randn(2, 8, 5, 7).transpose(2, 3),
        "5-D permute": torch.randn(2, 5, 3, 4, 8).permute(0, 4, 1, 2, 3),
        "channels_last": torch.randn(2, 8, 5, 7).contiguous(memory_format=torch.channels_last),
    }


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", list(odd_layouts()))
def test_compile_odd_dense_layouts(backend, layout):
    torch._dynamo.reset()
    x = odd_layouts()[layout].requires_grad_(True)
    s = torch.randn(2, 8, requires_grad=True)
    fns = {
        "group_norm_silu": lambda x, s: gk.group_norm_silu(x, 4, scale=s) + 1,
        "adain": lambda x, s: gk.adain(x, s, s) + 1,
    }
    with gk.use_backend(backend):
        for name, f in fns.items():
            want = f(x, s)
            gx, gs = torch.autograd.grad(want.square().sum(), (x, s))
            got = torch.compile(f, fullgraph=True)(x, s)
            cx, cs = torch.autograd.grad(got.square().sum(), (x, s))
            torch.testing.assert_close(got, want, msg=name)
            torch.testing.assert_close(cx, gx, msg=name)
            torch.testing.assert_close(cs, gs, msg=name)


@pytest.mark.parametrize("layout", list(odd_layouts()))
def test_opcheck_faketensor(layout):
    x = odd_layouts()[layout]
    s = torch.randn(2, 8)
    ops = torch.ops.genkernels
    for op, args in ((ops.group_norm_silu.default, (x, 4, None, None, 1e-5, s, None, True)),
                     (ops.adain.default, (x, s, s, 1e-5)),
                     (ops.ddim_step.default, (x, x.clone(), None, None, None, 0.4, 0.5, 0.0, None, None, 0, False, 0))):
        torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor"))
