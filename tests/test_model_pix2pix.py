"""Pix2Pix's mechanisms: the 70x70 PatchGAN, the U-Net with skips and dropout, GAN + 100 L1."""
import pytest
import torch
import torch.nn.functional as F

from genkernels import data, models
from genkernels.models.gan_layers import PatchDiscriminator, patch_receptive_field


def test_patchgan_sees_70x70_patches():
    assert patch_receptive_field(3) == 70
    torch.manual_seed(0)
    d = PatchDiscriminator(1, ndf=4, n_layers=3, norm="none").double()
    x = torch.randn(1, 1, 128, 128, dtype=torch.float64, requires_grad=True)
    out = d(x)
    i, j = out.shape[-2] // 2, out.shape[-1] // 2
    (grad,) = torch.autograd.grad(out[0, 0, i, j], x)
    rows, cols = grad[0, 0].abs().sum(1).nonzero(), grad[0, 0].abs().sum(0).nonzero()
    assert rows.max() - rows.min() + 1 == 70 and cols.max() - cols.min() + 1 == 70


def test_unet_skips_and_dropout():
    torch.manual_seed(0)
    model = models.build("pix2pix", "tiny")
    g = model.generator
    x = torch.randn(2, 1, 16, 16)
    # every decoder level but the innermost takes the encoder's output of its level concatenated
    for i, up in enumerate(g.up[:-1]):
        assert up[1].in_channels == 2 * g.down[i][-1 if i == 0 else 1].out_channels
    assert any(isinstance(m, torch.nn.Dropout) for m in g.up.modules())
    g.train()
    assert not torch.equal(g(x), g(x))                 # dropout in training
    g.eval()
    assert torch.equal(g(x), g(x))
    # the outermost skip: a pixel change reaches the output through the shortest path at full resolution
    y0 = g(x)
    x2 = x.clone()
    x2[0, 0, 5, 5] += 1
    assert (g(x2) - y0).abs().sum() > 0


def test_losses_are_gan_plus_100_l1_and_half_the_discriminator_loss():
    torch.manual_seed(0)
    model = models.build("pix2pix", "tiny")
    batch = data.get_batch(data.load("digits_thick", "train", 16), 4, 0)
    model.eval()                                       # no dropout: the same fake in both computations
    loss, logs = model(batch, "g", 0)
    fake = model.generator(batch["image"])
    logits = model.discriminator(torch.cat([batch["image"], fake], 1))
    expected = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits)) + 100 * F.l1_loss(fake, batch["target"])
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert all(p.grad is None for p in model.discriminator.parameters())   # the critic is frozen in "g"
    loss, _ = model(batch, "d", 0)
    real = model.discriminator(torch.cat([batch["image"], batch["target"]], 1))
    expected = 0.5 * (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                      + F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits)))
    torch.testing.assert_close(loss, expected)


def test_authors_sizes_and_errors():
    # the parameter counts the authors' code prints for unet_256 and the basic PatchGAN (3 -> 3 channels)
    model = models.build("pix2pix", "paper", in_channels=3, out_channels=3)
    count = lambda m: sum(p.numel() for p in m.parameters())        # noqa: E731
    assert round(count(model.generator) / 1e6, 3) == 54.414
    assert round(count(model.discriminator) / 1e6, 3) == 2.769
    with pytest.raises(ValueError, match="divisible"):
        models.build("pix2pix", "tiny", image_size=24)
    with pytest.raises(ValueError, match="norm"):
        models.build("pix2pix", "tiny", norm="layer")
    with pytest.raises(ValueError, match="num_dropout"):
        models.build("pix2pix", "tiny", num_dropout=3)


def test_evaluate_reports_l1_and_psnr_with_the_input_baseline():
    torch.manual_seed(0)
    model = models.build("pix2pix", "tiny").eval()
    out = model.evaluate(num=16)
    assert out["num"] == 16 and out["l1"]["floor"] == 0.0
    assert out["l1"]["value"] > 0 and out["psnr"]["value"] < 60 and out["psnr"]["baseline_input"] > 10
