"""The shared GAN pieces (genkernels.models.gan_layers): penalties, minibatch std, AdaIN, losses."""
import pytest
import torch

import genkernels
from genkernels.models import gan_layers as gl


def test_wgan_gp_zero_for_unit_lipschitz_linear_critic():
    torch.manual_seed(0)
    w = torch.randn(3 * 4 * 4, dtype=torch.float64)
    w = w / w.norm()                                        # gradient norm exactly 1 everywhere
    critic = lambda x: x.flatten(1) @ w                     # noqa: E731
    real, fake = torch.randn(5, 3, 4, 4, dtype=torch.float64), torch.randn(5, 3, 4, 4, dtype=torch.float64)
    assert gl.gradient_penalty(critic, real, fake).item() < 1e-20
    # a critic of slope 2 is penalised (2 - 1)^2 = 1 per sample
    assert gl.gradient_penalty(lambda x: 2 * critic(x), real, fake).item() == pytest.approx(1.0, rel=1e-12)


def test_r1_matches_finite_differences():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.Tanh(), torch.nn.Flatten(),
                              torch.nn.Linear(3 * 3 * 3, 1)).double()
    critic = lambda x: net(x).squeeze(1)                    # noqa: E731
    real = torch.randn(2, 2, 3, 3, dtype=torch.float64)
    h, est = 1e-6, torch.zeros(2)
    for n in range(2):
        g = torch.zeros(real[n].numel(), dtype=torch.float64)
        for i in range(real[n].numel()):
            d = torch.zeros_like(real[n]).flatten()
            d[i] = h
            xp, xm = real[n] + d.view_as(real[n]), real[n] - d.view_as(real[n])
            g[i] = (critic(xp[None]) - critic(xm[None])).item() / (2 * h)
        est[n] = g.pow(2).sum()
    assert gl.r1_penalty(critic, real).item() == pytest.approx(est.mean().item(), rel=1e-6)


def test_r1_double_backward_through_fused_adain_matches_reference():
    torch.manual_seed(0)
    ada = gl.StyleAdaIN(4, 6).double()
    w = torch.randn(3, 6, dtype=torch.float64)
    critic = lambda x: ada(x, w).pow(3).sum(dim=(1, 2, 3))  # noqa: E731
    real = torch.randn(3, 4, 5, 5, dtype=torch.float64)
    grads = []
    for backend in ("reference", "auto"):
        with genkernels.use_backend(backend):
            ada.zero_grad()
            gl.r1_penalty(critic, real).backward()
            grads.append(ada.affine.weight.grad.clone())
    torch.testing.assert_close(grads[1], grads[0])
    assert grads[0].abs().sum() > 0


def test_minibatch_std_channel():
    x = torch.randn(6, 3, 4, 4)
    y = gl.MinibatchStd(group_size=4)(x)                    # 6 samples: groups of 3 (largest divisor <= 4)
    assert y.shape == (6, 4, 4, 4)
    torch.testing.assert_close(y[:, :3], x)
    g = x.reshape(3, 2, 3, 4, 4)
    expect = (g.var(0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))   # per member of the other axis
    torch.testing.assert_close(y[:, 3, 0, 0], expect.repeat(3))
    torch.testing.assert_close(gl.MinibatchStd()(torch.ones(4, 2, 4, 4))[:, 2], torch.full((4, 4, 4), 1e-4))


def test_equal_lr_scales_at_run_time():
    lin = gl.EqualLinear(16, 8, lr_mul=0.01, bias_init=1.0)
    x = torch.randn(4, 16)
    torch.testing.assert_close(lin(x), x @ (lin.weight * 0.01 * 2 ** 0.5 / 4).t() + 1.0)
    assert lin.weight.std() > 10        # stored at 1 / lr_mul, so Adam's steps are scaled by lr_mul


def test_losses_and_bad_kind():
    r, f = torch.tensor([2.0, 3.0]), torch.tensor([-1.0, 0.5])
    assert gl.d_loss("wgan", r, f).item() == pytest.approx(-2.75)
    assert gl.d_loss("hinge", r, f).item() == pytest.approx(0.75)
    assert gl.g_loss("lsgan", f).item() == pytest.approx((4 + 0.25) / 2)
    assert gl.g_loss("nonsaturating", f).item() == pytest.approx(torch.nn.functional.softplus(-f).mean().item())
    with pytest.raises(ValueError, match="loss"):
        gl.d_loss("bce", r, f)
