"""genkernels.metrics: the digits classifier, FD-digits, KID, accuracy, PSNR and codebook usage."""
import math
import os

import pytest
import torch

from genkernels import data, metrics


def test_classifier_cached_and_accurate():
    acc = metrics.classifier_accuracy()
    assert acc > 0.95, acc
    path = os.path.join(metrics._cache_dir(), f"digits_classifier-{metrics._classifier_key()}.safetensors")
    from safetensors.torch import load_file
    sd = load_file(path)                         # no pickle in the cache
    assert set(sd) == set(metrics.classifier().state_dict())
    fresh = metrics.DigitsClassifier().eval()
    fresh.load_state_dict(sd)
    x = data.load("digits", "test", 16)["image"][:32]
    assert torch.equal(fresh(x), metrics.classifier()(x))


def test_features_any_size_and_channels():
    x16 = data.load("digits", "test", 16)["image"][:20]
    f = metrics.digits_features(x16)
    assert f.shape == (20, 128) and f.dtype == torch.float64
    assert torch.allclose(metrics.digits_features(x16.expand(-1, 3, -1, -1)), f)   # grey RGB = grey
    x32 = data.load("digits", "test", 32)["image"][:20]
    labels = data.load("digits", "test", 32)["label"][:20]
    assert metrics.digits_accuracy(x32, labels) >= 0.9
    with pytest.raises(ValueError, match="images"):
        metrics.digits_features(torch.zeros(2, 2, 8, 8))
    with pytest.raises(ValueError, match="labels"):
        metrics.digits_accuracy(x32, labels[:3])


def test_frechet_distance_closed_form():
    # independent Gaussians with diagonal covariances: FD = |mu1 - mu2|^2 + sum (s1 - s2)^2 (std devs)
    g = torch.Generator().manual_seed(0)
    n, d = 200_000, 4
    s1, s2 = torch.tensor([1.0, 2.0, 0.5, 1.0]), torch.tensor([1.0, 1.0, 1.0, 3.0])
    mu2 = torch.tensor([0.0, 1.0, 0.0, -2.0])
    a = torch.randn(n, d, generator=g, dtype=torch.float64) * s1
    b = torch.randn(n, d, generator=g, dtype=torch.float64) * s2 + mu2
    expect = float(mu2.square().sum() + (s1 - s2).square().sum())
    assert metrics.frechet_distance(a, b) == pytest.approx(expect, rel=0.02)
    assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_fd_and_kid_order_real_below_corrupted_below_noise():
    real = data.load("digits", "test", 16)["image"]
    train = data.load("digits", "train", 16)["image"][:359]
    blurred = torch.nn.functional.avg_pool2d(train, 3, 1, 1)
    noise = torch.rand(train.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    fd = [metrics.fd_digits(x, real) for x in (train, blurred, noise)]
    kd = [metrics.kid(x, real) for x in (train, blurred, noise)]
    assert fd[0] < fd[1] < fd[2], fd
    assert kd[0] < kd[1] < kd[2], kd
    assert abs(kd[0]) < 0.05 * kd[2]     # unbiased: about 0 for the same distribution


def test_floors_and_ceilings():
    for m in ("fd_digits", "kid"):
        lo, hi = metrics.floor(m, num=200, image_size=16), metrics.ceiling(m, num=200, image_size=16)
        assert lo < 0.05 * hi, (m, lo, hi)
    assert metrics.floor("digits_accuracy", num=200, image_size=16) > 0.95
    assert metrics.ceiling("digits_accuracy", num=200, image_size=16) < 0.25
    assert metrics.floor("psnr") is None and metrics.ceiling("psnr", image_size=16) < 10
    b = metrics.bounds("fd_digits", 12.5, num=200, image_size=16)
    assert b["value"] == 12.5 and b["floor"] == metrics.floor("fd_digits", num=200, image_size=16)
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.floor("fid")


def test_mse_psnr():
    a = torch.zeros(4, 1, 8, 8)
    b = a + 0.1
    assert metrics.mse(a, b) == pytest.approx(0.01)
    assert metrics.psnr(a, b) == pytest.approx(10 * math.log10(4 / 0.01))
    assert metrics.psnr(a, a) > 150
    with pytest.raises(ValueError, match="same shape"):
        metrics.mse(a, b[:2])


def test_codebook_usage():
    u = metrics.codebook_usage(torch.arange(16).repeat(3), 16)
    assert u["perplexity"] == pytest.approx(16) and u["usage"] == 1.0
    u = metrics.codebook_usage(torch.full((10,), 5), 16)
    assert u["perplexity"] == pytest.approx(1.0) and u["usage"] == 1 / 16
    u = metrics.codebook_usage(torch.tensor([0, 0, 1, 1]), 8)
    assert u["perplexity"] == pytest.approx(2.0) and u["usage"] == 0.25
    with pytest.raises(ValueError, match="indices"):
        metrics.codebook_usage(torch.tensor([8]), 8)
