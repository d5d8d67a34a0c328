"""DCGAN: the paper's architecture rules, initialisation and optimiser."""
import pytest
import torch
from torch import nn

from genkernels.models import dcgan


def _model(**kw):
    torch.manual_seed(0)
    return dcgan.DCGAN(dcgan.DCGANConfig(**{**dcgan.DCGAN.presets["tiny"], **kw}))


def test_paper_architecture_and_init():
    m = _model(image_size=32, g_channels=16, d_channels=16)
    G, D = m.generator.net, m.discriminator.net
    assert all(isinstance(l, (nn.ConvTranspose2d, nn.BatchNorm2d, nn.ReLU, nn.Tanh)) for l in G)
    assert isinstance(G[-1], nn.Tanh) and not isinstance(D[1], nn.BatchNorm2d)   # no BN on D's input layer
    assert all(l.negative_slope == 0.2 for l in D if isinstance(l, nn.LeakyReLU))
    convs = [l.weight for l in [*G, *D] if isinstance(l, (nn.Conv2d, nn.ConvTranspose2d))]
    w = torch.cat([c.flatten() for c in convs])
    assert abs(w.std().item() - 0.02) < 0.002 and abs(w.mean().item()) < 0.002
    z = torch.randn(3, m.config.z_dim)
    x = m.generator(z)
    assert x.shape == (3, 1, 32, 32) and x.abs().max() <= 1
    assert m.discriminator(x).shape == (3,)
    opt = m.optimizers()
    assert opt["d"].param_groups[0]["lr"] == 2e-4 and opt["g"].param_groups[0]["betas"] == (0.5, 0.999)


def test_non_saturating_generator_loss():
    m = _model()
    batch = {"image": torch.zeros(4, 1, 8, 8), "label": torch.zeros(4, dtype=torch.int64)}
    with torch.no_grad():                      # a critic that outputs 0 everywhere: -log sigmoid(0) = log 2
        m.discriminator.net[-1].weight.zero_()
    loss, _ = m(batch, "g")
    assert loss.item() == pytest.approx(torch.log(torch.tensor(2.0)).item(), rel=1e-6)
    loss, _ = m(batch, "d")
    assert loss.item() == pytest.approx(2 * torch.log(torch.tensor(2.0)).item(), rel=1e-6)


def test_bad_config():
    with pytest.raises(ValueError, match="image_size"):
        _model(image_size=12)
    with pytest.raises(ValueError, match="loss"):
        _model(loss="bce")


@pytest.mark.parametrize("name", ["dcgan", "cgan", "progan", "stylegan"])
def test_generator_phase_leaves_no_gradient_on_the_critic(name):
    """The critic gets no gradient in "g" (nor the generator in "d"): nothing wasted, nothing to leak
    into the other network's next step."""
    import genkernels.models as gm
    torch.manual_seed(0)
    m = gm.build(name, "tiny")
    size = m.config.image_size
    batch = {"image": torch.rand(4, 1, size, size) * 2 - 1, "label": torch.arange(4)}
    loss, _ = m(batch, "g", step=0)
    loss.backward()
    assert all(p.grad is None for p in m.discriminator.parameters())
    assert any(p.grad is not None for p in m.generator.parameters())
    assert all(p.requires_grad for p in m.discriminator.parameters())
    m.zero_grad(set_to_none=True)
    loss, _ = m(batch, "d", step=0)
    loss.backward()
    assert all(p.grad is None for p in m.generator.parameters())
