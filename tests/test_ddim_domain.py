"""ddim_step / ddpm_step's alpha domain: float alphas outside it are refused with a ValueError naming the
argument; a sample whose tensor alphas are outside it gets NaN outputs on every backend (no host sync)."""
import pytest
import torch

import genkernels as gk
from conftest import compiled_backends

BACKENDS = ["reference"] + compiled_backends("cpu")


@pytest.mark.parametrize("a_t, a_p, pred, match", [
    (1.0, 1.0, "epsilon", "alpha_prod_t"),
    (0.5, 0.4, "epsilon", "alpha_prod_t"),       # a_t > a_p: the reference went through complex numbers
    (0.9, 0.0, "epsilon", "alpha_prod_t_prev"),
    (0.0, 0.5, "epsilon", "alpha_prod_t"),       # epsilon prediction divides by sqrt(a_t)
    (1.5, 0.5, "v_prediction", "alpha_prod_t"),
])
@pytest.mark.parametrize("op", ["ddim_step", "ddpm_step"])
def test_float_alphas_outside_domain_raise(a_t, a_p, pred, match, op):
    x = torch.randn(2, 3, 4)
    fn = getattr(gk, op)
    with pytest.raises(ValueError, match=match):
        fn(x, x, a_t, a_p, prediction_type=pred)
    with pytest.raises(ValueError, match=match):
        getattr(gk, op + "_reference")(x, x, a_t, a_p, prediction_type=pred)


def test_eta_too_large_raises():
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="eta"):
        gk.ddim_step(x, x, 0.2, 0.9, eta=3.0, noise=x)


@pytest.mark.parametrize("pred", ["epsilon", "v_prediction", "sample"])
def test_domain_edges_are_finite(pred):
    """a_t = 0 (zero terminal SNR) with v/sample prediction, a_p = 1 (set_alpha_to_one), a_t = a_p."""
    x, m = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    cases = [(0.3, 1.0), (0.4, 0.4)] + ([(0.0, 0.2)] if pred != "epsilon" else [])
    for backend in BACKENDS:
        with gk.use_backend(backend):
            for a_t, a_p in cases:
                for out in gk.ddim_step(x, m, a_t, a_p, prediction_type=pred) + gk.ddpm_step(
                        x, m, a_t, a_p, prediction_type=pred):
                    assert torch.isfinite(out).all(), (backend, a_t, a_p)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", ["ddim_step", "ddpm_step"])
def test_tensor_alphas_outside_domain_give_nan_for_that_sample(backend, op):
    x, m = torch.randn(4, 3, 5), torch.randn(4, 3, 5)
    a_t = torch.tensor([0.5, 1.0, 0.5, 0.0], dtype=torch.float64)
    a_p = torch.tensor([0.6, 1.0, 0.4, 0.5], dtype=torch.float64)  # samples 1, 2, 3 are outside
    with gk.use_backend(backend):
        prev, x0 = getattr(gk, op)(x, m, a_t, a_p)
    for out in (prev, x0):
        assert torch.isfinite(out[0]).all()
        assert out[1:].isnan().all(), backend


def test_tensor_alpha_gradients_nan_outside_domain():
    x = torch.randn(2, 3, requires_grad=True)
    m = torch.randn(2, 3, requires_grad=True)
    a_t, a_p = torch.tensor([0.5, 0.7]), torch.tensor([0.6, 0.5])
    prev, _ = gk.ddim_step(x, m, a_t, a_p)
    gx, gm = torch.autograd.grad(prev.sum(), (x, m))
    assert torch.isfinite(gx[0]).all() and gx[1].isnan().all()
    assert torch.isfinite(gm[0]).all() and gm[1].isnan().all()
