"""Latent diffusion (genkernels/models/ldm.py): the two training stages, the measured scaling factor, a
pretrained (frozen) autoencoder from a checkpoint, the VQ-VAE variant, sampling shapes and errors."""
import pytest
import torch

from genkernels import checkpoint, data
from genkernels.models.ldm import LDM, LDMConfig, TINY
from genkernels.models.vae import VAE, VAEConfig


def batch(n=8, size=8):
    return {k: v[:n] for k, v in data.load("digits", "train", image_size=size).items()}


def train(m, steps):
    opt = m.optimizers()
    losses = []
    for step in range(steps):
        for phase in m.phases(step):
            loss, _ = m(batch(), phase, step)
            opt[phase].zero_grad()
            loss.backward()
            opt[phase].step()
            losses.append((phase, loss.item()))
    return losses


@pytest.mark.parametrize("autoencoder", ["vae", "vqvae"])
def test_stages_and_scaling(autoencoder):
    torch.manual_seed(0)
    m = LDM(LDMConfig(**dict(TINY, autoencoder=autoencoder, ae_steps=3)))
    assert m.latent_scale.item() == 0.0   # measured on the first diffusion batch
    losses = train(m, 5)
    assert [p for p, _ in losses] == ["ae"] * 3 + ["main"] * 2
    assert all(torch.isfinite(torch.tensor(v)) for _, v in losses)
    # unit-variance latents at the measured scale
    with torch.no_grad():
        z = m.to_latents(batch()["image"])
    assert 0.5 < z.std().item() < 2.0 and m.latent_scale.item() > 0
    g = torch.Generator().manual_seed(0)
    img = m.generate(3, g)
    assert img.shape == (3, 1, 8, 8) and img.abs().max() <= 1
    lat = m.sample(2, g, output_latents=True)
    assert lat.shape == (2, *m.latent_shape())


def test_fixed_scaling_factor_and_frozen_pretrained_autoencoder(tmp_path):
    torch.manual_seed(0)
    vae = VAE(VAEConfig(image_size=8, block_out_channels=(8, 8), latent_channels=2, norm_num_groups=4))
    checkpoint.save(str(tmp_path / "vae"), vae)
    m = LDM(LDMConfig(**dict(TINY, autoencoder_checkpoint=str(tmp_path / "vae"), scaling_factor=0.5)))
    assert m.phases(0) == ("main",) and "ae" not in m.optimizers()
    for k, v in vae.state_dict().items():
        torch.testing.assert_close(m.vae.state_dict()[k], v)
    before = {k: v.clone() for k, v in m.vae.state_dict().items()}
    train(m, 2)
    assert m.latent_scale.item() == 0.5
    assert all(torch.equal(before[k], v) for k, v in m.vae.state_dict().items())   # frozen
    with pytest.raises(ValueError, match="must be a trained 'vqvae' run"):
        LDM(LDMConfig(**dict(TINY, autoencoder="vqvae", autoencoder_checkpoint=str(tmp_path / "vae"))))


def test_config_errors():
    with pytest.raises(ValueError, match="divisible by the autoencoder's factor"):
        LDMConfig(**dict(TINY, image_size=6, ae_block_out_channels=(8, 8, 8)))
    with pytest.raises(ValueError, match="`autoencoder` must be 'vae' or 'vqvae'"):
        LDMConfig(**dict(TINY, autoencoder="gan"))
    m = LDM(LDMConfig(**TINY))
    with pytest.raises(ValueError, match="multiples of the VAE factor 2"):
        m.latent_shape(7, 8)
