"""autoencoder: shapes, the bicubic baseline, config errors, evaluate; training to quality is `long`."""
import pytest
import torch
import torch.nn.functional as F

from genkernels import metrics, models
from genkernels.models.autoencoder import bicubic_baseline

from autoencoder_helpers import train_digits


def test_latent_shape_and_round_trip():
    m = models.build("autoencoder", "tiny")
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    z = m.encode(x)
    assert z.shape == (3, *m.latent_shape) == (3, 2, 4, 4)
    assert m.latent_numbers == 32 < x[0].numel()        # 32 numbers for 64 pixels
    assert m.decode(z).shape == x.shape
    loss, logs = m({"image": x})
    torch.testing.assert_close(loss, F.mse_loss(m.reconstruct(x), x))
    assert set(logs) == {"mse"}


def test_digits_latent_is_smaller_than_the_image():
    m = models.build("autoencoder", "digits")
    assert m.latent_numbers == 32 and m.latent_numbers < m.config.image_size ** 2 // 4


@pytest.mark.parametrize("numbers,size", [(16, (4, 4)), (32, (5, 6)), (64, (8, 8)), (1000, (16, 16))])
def test_bicubic_baseline_size(numbers, size):
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    y, hw = bicubic_baseline(x, numbers)
    assert hw == size and y.shape == x.shape
    assert y.min() >= -1 and y.max() <= 1


def test_bicubic_baseline_improves_with_size():
    x = models.build("autoencoder", "digits")._held_out(64, None)
    psnrs = [metrics.psnr(bicubic_baseline(x, n)[0], x) for n in (4, 16, 64, 256)]
    assert psnrs == sorted(psnrs) and psnrs[-1] > 40           # 16x16 from 16x16: the identity
    with pytest.raises(ValueError, match="numbers"):
        bicubic_baseline(torch.zeros(1, 3, 8, 8), 2)


def test_config_errors():
    with pytest.raises(ValueError, match="image_size"):
        models.build("autoencoder", "tiny", image_size=9)
    with pytest.raises(ValueError, match="norm_num_groups"):
        models.build("autoencoder", "tiny", norm_num_groups=3)


def test_evaluate_reports_psnr_baseline_and_bounds():
    m = models.build("autoencoder", "tiny")
    r = m.evaluate("test", 40)
    assert r["num"] == 40 and r["latent_numbers"] == 32
    assert r["baseline_bicubic"]["size"] == [5, 6] and r["baseline_bicubic"]["numbers"] == 30
    x = m._held_out(40, None)
    with torch.no_grad():
        assert r["psnr"]["value"] == pytest.approx(metrics.psnr(m.reconstruct(x).clamp(-1, 1), x))
    assert r["psnr"]["ceiling"] is not None and r["mse"]["floor"] is None
    assert r["psnr_minus_baseline"] == pytest.approx(r["psnr"]["value"] - r["baseline_bicubic"]["psnr"])
    assert {"value", "floor", "ceiling"} <= set(r["fd_digits_reconstructions"])
    assert m.training          # evaluate restores the mode


@pytest.mark.long
def test_digits_training_beats_bicubic():
    train_digits("autoencoder")


@pytest.mark.parametrize("name", ["autoencoder", "vae", "vqvae"])
def test_benchmark_cases_compare_like_with_like(name):
    """genkernels.bench_models: the eager / compile baselines (torch's GroupNorm and SDPA) compute what
    the fused model computes, for the decode and the training step of every registered case."""
    from genkernels import benchkit as gb
    cases = gb.cases(name, "cpu", quick=True)
    assert [c.pass_ for c in cases] == ["fwd+bwd", "fwd"]
    for case in cases:
        outs = {}
        for impl in ("eager", "genkernels[cpu]", "genkernels[reference]"):
            fn = case.setup([impl])[impl]    # fresh weights each: a VQ training step moves its codebook
            torch.manual_seed(0)             # the VAE's eps, the VQ restarts
            outs[impl] = fn()
        for impl in ("genkernels[cpu]", "genkernels[reference]"):
            want, got = outs["eager"], outs[impl]
            for a, b in zip(want if isinstance(want, tuple) else [want], got if isinstance(got, tuple) else [got]):
                torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-3)
