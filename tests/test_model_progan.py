"""Progressive GAN's growing: fade-in of the generator and the critic, the step-driven schedule."""
import pytest
import torch
import torch.nn.functional as F

from genkernels.models import progan


def _model(**kw):
    torch.manual_seed(0)
    return progan.ProGAN(progan.ProGANConfig(**{**progan.ProGAN.presets["tiny"], "channels": (16, 8, 8),
                                                "image_size": 16, **kw}))


def test_generator_fade_in_endpoints():
    m = _model()
    G, z = m.generator, torch.randn(3, 16)
    for level in (1, 2):
        low = G(z, level - 1, 1.0)
        torch.testing.assert_close(G(z, level, 0.0), F.interpolate(low, scale_factor=2.0, mode="nearest"))
        full = G(z, level, 1.0)
        with torch.no_grad():                 # alpha = 1: the previous level's to_rgb plays no part
            G.to_rgb[level - 1].weight.mul_(3.0)
        torch.testing.assert_close(G(z, level, 1.0), full)
        mid = G(z, level, 0.25)
        torch.testing.assert_close(mid, torch.lerp(F.interpolate(G(z, level - 1, 1.0), scale_factor=2.0), full, 0.25))


def test_generator_features_are_pixel_normalised_and_averaged():
    """Pixel norm of z and after every generator conv (each to-RGB input has unit RMS per pixel, the output
    ignores z's scale); the generator is the EMA-averaged module."""
    m = _model()
    G, seen = m.generator, []
    for rgb in G.to_rgb:
        rgb.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach()))
    z = torch.randn(3, 16)
    out = G(z, 2, 0.5)                          # fading in: the skip's to-RGB (level 1) and the new one (level 2)
    assert [x.shape[-1] for x in seen] == [8, 16]
    for x in seen:
        torch.testing.assert_close(x.pow(2).mean(1), torch.ones_like(x[:, 0]), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(G(7 * z, 2, 0.5), out)
    assert m.ema_modules() == ["generator"] and progan.ProGANConfig().ema_decay == 0.999


def test_critic_fade_in_endpoints():
    m = _model()
    D = m.discriminator
    for level in (1, 2):
        img = torch.randn(4, 1, 4 * 2 ** level, 4 * 2 ** level)
        torch.testing.assert_close(D(img, level, 0.0), D(F.avg_pool2d(img, 2), level - 1, 1.0))
        full = D(img, level, 1.0)
        with torch.no_grad():                 # alpha = 1: the half-resolution from_rgb plays no part
            D.from_rgb[level - 1].weight.mul_(3.0)
        torch.testing.assert_close(D(img, level, 1.0), full)
        assert not torch.allclose(D(img, level, 0.5), full)


def test_schedule_and_real_images_follow_the_step():
    m = _model(steps_per_phase=10)
    assert [m.schedule(s) for s in (0, 9, 10, 15, 20, 29, 30, 35, 50, 999)] == [
        (0, 1.0), (0, 1.0), (1, 0.0), (1, 0.5), (1, 1.0), (1, 1.0), (2, 0.0), (2, 0.5), (2, 1.0), (2, 1.0)]
    img = torch.randn(2, 1, 16, 16)
    torch.testing.assert_close(m.real_at(img, 0, 1.0), F.avg_pool2d(img, 4))
    torch.testing.assert_close(m.real_at(img, 2, 0.0), F.interpolate(F.avg_pool2d(img, 2), scale_factor=2.0))
    torch.testing.assert_close(m.real_at(img, 2, 1.0), img)
    # a training step records where it is, and sampling uses that level (upsampled to image_size)
    batch = {"image": img, "label": torch.zeros(2, dtype=torch.int64)}
    _, logs = m(batch, "g", step=15)
    assert (logs["level"].item(), logs["alpha"].item()) == (1.0, 0.5)
    assert m.generate(3, torch.Generator().manual_seed(0)).shape == (3, 1, 16, 16)


def test_critic_loss_has_gradient_penalty_and_drift():
    m = _model()
    batch = {"image": torch.randn(4, 1, 16, 16), "label": torch.zeros(4, dtype=torch.int64)}
    torch.manual_seed(1)
    loss, logs = m(batch, "d", step=100)
    assert logs["gp"].item() > 0
    assert torch.isfinite(loss)


def test_bad_config():
    with pytest.raises(ValueError, match="channels"):
        _model(channels=(8, 8))
    with pytest.raises(ValueError, match="steps_per_phase"):
        _model(steps_per_phase=0)
