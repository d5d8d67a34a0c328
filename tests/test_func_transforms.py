"""torch.func transforms (grad, vmap, jvp) over the public ops: the same values and derivatives as the
reference formulas (under a transform the ops run them: the registered ops' autograd does not compose)."""
import pytest
import torch
from torch.func import grad, jvp, vmap

import genkernels as gk

S = torch.randn(2, 4, dtype=torch.float64)


def cases():
    return {
        "group_norm_silu": (lambda x: gk.group_norm_silu(x, 2, scale=S), lambda x: gk.group_norm_silu_reference(x, 2, scale=S)),
        "adain": (lambda x: gk.adain(x, S, S), lambda x: gk.adain_reference(x, S, S)),
        "attention": (lambda x: gk.attention(x[:, :2], x[:, 2:], x[:, 2:]),
                      lambda x: gk.attention_reference(x[:, :2], x[:, 2:], x[:, 2:])),
        "ddim_step": (lambda x: gk.ddim_step(x, x * 0.5, 0.5, 0.6)[0], lambda x: gk.ddim_step_reference(x, x * 0.5, 0.5, 0.6)[0]),
        "ddpm_step": (lambda x: gk.ddpm_step(x, x * 0.5, 0.5, 0.6)[0], lambda x: gk.ddpm_step_reference(x, x * 0.5, 0.5, 0.6)[0]),
    }


@pytest.mark.parametrize("name", list(cases()))
def test_grad_vmap_jvp(name):
    f, ref = cases()[name]
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(grad(lambda t: f(t).square().sum())(x), grad(lambda t: ref(t).square().sum())(x))
    xs = torch.randn(3, 2, 4, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(vmap(f)(xs), torch.stack([ref(t) for t in xs]))
    t = torch.randn_like(x)
    _, tan = jvp(f, (x,), (t,))
    _, want = jvp(ref, (x,), (t,))
    torch.testing.assert_close(tan, want)
    assert tan.abs().max() > 0
