"""Conditional GAN: conditional normalisation (adain with per-class affine), the projection critic,
class-conditional sampling."""
import pytest
import torch

import genkernels
from genkernels.models import cgan


def _model(**kw):
    torch.manual_seed(0)
    return cgan.CGAN(cgan.CGANConfig(**{**cgan.CGAN.presets["tiny"], **kw}))


def test_conditional_norm_is_adain_with_class_affine():
    norm = cgan.ConditionalNorm(4, 3)
    with torch.no_grad():
        norm.scale.weight.normal_()
        norm.bias.weight.normal_()
    x, y = torch.randn(5, 4, 3, 3), torch.tensor([0, 1, 2, 1, 0])
    expect = genkernels.adain_reference(x, norm.scale.weight[y], norm.bias.weight[y])
    torch.testing.assert_close(norm(x, y), expect)


def test_projection_critic():
    m = _model()
    D = m.discriminator
    with torch.no_grad():
        D.embed.weight.normal_()
    x = torch.randn(3, 1, 8, 8)
    y0, y1 = torch.zeros(3, dtype=torch.int64), torch.full((3,), 4)
    # D(x, y) - D(x, y') = <embed(y) - embed(y'), phi(x)>, phi(x) the summed features
    h = x
    h = torch.nn.functional.leaky_relu(D.from_image(h), 0.2)
    for down in D.downs:
        h = torch.nn.functional.leaky_relu(down(h), 0.2)
    phi = h.sum(dim=(2, 3))
    torch.testing.assert_close(D(x, y0) - D(x, y1), ((D.embed(y0) - D.embed(y1)) * phi).sum(1))


def test_generate_requested_class_and_errors():
    m = _model()
    with torch.no_grad():
        for norm in m.generator.norms:
            norm.bias.weight.normal_()
    g = lambda: torch.Generator().manual_seed(0)          # noqa: E731
    a, b = m.generate(4, g(), class_label=3), m.generate(4, g(), class_label=5)
    assert a.shape == (4, 1, 8, 8) and not torch.allclose(a, b)
    labels = torch.arange(4) % 10                         # default: cycle through the classes
    torch.testing.assert_close(m.generate(4, g()), m.generator(torch.randn(4, 8, generator=g()), labels))
    for bad in (10, -1, 2.5):
        with pytest.raises(ValueError, match="class_label"):
            m.generate(2, g(), class_label=bad)
    assert m.sample_options["--class"]["dest"] == "class_label"


def test_critic_sees_real_labels_and_generator_random_ones():
    m = _model()
    batch = {"image": torch.randn(8, 1, 8, 8), "label": torch.full((8,), 7)}
    seen = []
    orig = m.discriminator.forward
    m.discriminator.forward = lambda x, y: (seen.append(y.clone()), orig(x, y))[1]
    torch.manual_seed(0)
    m(batch, "d")
    assert torch.equal(seen[0], batch["label"]) and not torch.equal(seen[1], batch["label"])


def test_cli_sample_draws_the_requested_class(tmp_path, capsys, monkeypatch):
    """`genkernels sample cgan --class 3` hands class 3 to generate(); an unknown class is one line, status 2."""
    from genkernels import cli, train
    run = tmp_path / "run"
    train.fit(_model(), steps=1, out=str(run), log_every=1, sample_every=10_000, progress=False)
    seen = []
    orig = cgan.CGAN.generate
    monkeypatch.setattr(cgan.CGAN, "generate", lambda self, n, g, **kw: (seen.append(kw), orig(self, n, g, **kw))[1])
    png = tmp_path / "threes.png"
    assert cli.main(["sample", "cgan", "--checkpoint", str(run), "--class", "3", "--num", "4", "--out", str(png)]) == 0
    assert png.exists() and seen[-1]["class_label"] == 3
    capsys.readouterr()
    assert cli.main(["sample", "cgan", "--checkpoint", str(run), "--class", "10", "--out", str(png)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "class_label" in err[0]
