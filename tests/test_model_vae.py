"""vae: diffusers AutoencoderKL parity (load_diffusers_vae), the ELBO terms, sampling from the prior."""
import math

import pytest
import torch

import genkernels
from genkernels import models
from genkernels.models.vae import DiagonalGaussian, VAE

from autoencoder_helpers import BACKENDS, close, random_diffusers, train_digits

diffusers = pytest.importorskip("diffusers")
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution  # noqa: E402


CONFIGS = [
    dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
         up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
         latent_channels=4, norm_num_groups=4, sample_size=16),
    dict(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 3,
         up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 8, 16), layers_per_block=2,
         latent_channels=2, norm_num_groups=2, sample_size=16, mid_block_add_attention=False,
         use_quant_conv=False, use_post_quant_conv=False, scaling_factor=0.5),
    dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",),
         up_block_types=("UpDecoderBlock2D",), block_out_channels=(16,), layers_per_block=1,
         latent_channels=3, norm_num_groups=8, sample_size=8, shift_factor=0.1),
]


def _random_kl(cfg, seed=0):
    return random_diffusers(diffusers.AutoencoderKL, cfg, seed)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ci", range(len(CONFIGS)))
def test_load_diffusers_vae_same_encode_decode(backend, ci):
    cfg = CONFIGS[ci]
    theirs = _random_kl(cfg, ci)
    ours = models.load_diffusers_vae(theirs).eval()
    assert ours.config.scaling_factor == theirs.config.scaling_factor
    assert ours.config.shift_factor == theirs.config.shift_factor
    x = torch.rand(2, cfg["in_channels"], 16, 16) * 2 - 1
    with torch.no_grad(), genkernels.use_backend(backend):
        want, got = theirs.encode(x).latent_dist, ours.encode(x)
        close(got.mean, want.mean)
        close(got.logvar, want.logvar)
        close(got.sample(torch.Generator().manual_seed(3)), want.sample(torch.Generator().manual_seed(3)))
        z = torch.randn_like(want.mean)
        close(ours.decode(z), theirs.decode(z).sample)


def test_load_from_state_dict_and_config_with_old_attention_names():
    theirs = _random_kl(CONFIGS[0])
    state = {k.replace("attentions.0.to_q.", "attentions.0.query.").replace("attentions.0.to_out.0.",
                                                                             "attentions.0.proj_attn."): v
             for k, v in theirs.state_dict().items()}
    assert any(".query." in k for k in state)
    ours = models.load_diffusers_vae(state, dict(theirs.config)).eval()
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        close(ours.reconstruct(x), theirs.decode(theirs.encode(x).latent_dist.mode()).sample)


def test_load_errors():
    theirs = _random_kl(CONFIGS[0])
    with pytest.raises(ValueError, match="config"):
        models.load_diffusers_vae(theirs.state_dict())
    with pytest.raises(TypeError, match="m"):
        models.load_diffusers_vae(3)
    with pytest.raises(ValueError, match="DownEncoderBlock2D"):
        models.load_diffusers_vae(theirs.state_dict(), dict(theirs.config, down_block_types=("AttnDownEncoderBlock2D",
                                                                                             "DownEncoderBlock2D")))
    with pytest.raises(ValueError, match="latents_mean"):
        models.load_diffusers_vae(theirs.state_dict(), dict(theirs.config, latents_mean=(0.0,) * 4))


def test_sd_preset_is_diffusers_sd_vae():
    """The `sd` preset has exactly the parameter names and shapes of Stable Diffusion's AutoencoderKL."""
    sd = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
              up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
              latent_channels=4, norm_num_groups=32, sample_size=256)
    with torch.device("meta"):
        theirs = diffusers.AutoencoderKL(**sd)
        ours = models.build("vae", "sd")
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
    assert shapes(ours) == shapes(theirs)
    assert sum(p.numel() for p in ours.parameters()) == 83_653_863
    assert ours.config.scaling_factor == 0.18215 and ours.latent_shape == (4, 32, 32)


def test_posterior_matches_diffusers_and_torch_distributions():
    params = torch.randn(3, 8, 4, 4) * 2
    ours, theirs = DiagonalGaussian(params), DiagonalGaussianDistribution(params)
    torch.testing.assert_close(ours.kl(), theirs.kl())
    s = ours.sample(torch.Generator().manual_seed(0))
    torch.testing.assert_close(ours.nll(s), theirs.nll(s))
    normal = torch.distributions.Normal(ours.mean, ours.std)
    std_normal = torch.distributions.Normal(torch.zeros_like(ours.mean), torch.ones_like(ours.std))
    torch.testing.assert_close(ours.kl(), torch.distributions.kl_divergence(normal, std_normal).flatten(1).sum(1))


def test_elbo_terms_and_loss():
    """nll is -log N(x; decode(z), recon_std^2), kl is KL(q || N(0, I)), elbo = -(nll + kl), and the loss
    is (nll + kl_weight * kl) / D averaged over the batch."""
    m = models.build("vae", "tiny", recon_std=0.3, kl_weight=0.5)
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    t = m.terms(x, torch.Generator().manual_seed(1))
    posterior = m.encode(x)
    z = posterior.sample(torch.Generator().manual_seed(1))
    x_hat = m.decode(z)
    torch.testing.assert_close(t["x_hat"], x_hat)
    log_lik = torch.distributions.Normal(x_hat, 0.3).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(t["nll"], -log_lik)
    torch.testing.assert_close(t["kl"], posterior.kl())
    torch.testing.assert_close(t["elbo"], -(t["nll"] + t["kl"]))
    # the training loss with the same draw of eps (torch's global RNG)
    torch.manual_seed(5)
    loss, logs = m({"image": x})
    torch.manual_seed(5)
    z = m.encode(x).sample()
    t = {"nll": -torch.distributions.Normal(m.decode(z), 0.3).log_prob(x).flatten(1).sum(1), "kl": posterior.kl()}
    torch.testing.assert_close(loss, (t["nll"] + 0.5 * t["kl"]).mean() / 64)
    torch.testing.assert_close(logs["elbo"], -(t["nll"] + t["kl"]).mean())


def test_elbo_is_a_lower_bound_by_monte_carlo():
    """log p(x) >= ELBO: an importance-sampled estimate of log p(x) (K draws of q) lies above the
    reported ELBO (analytic KL, its own draws), which in turn is the mean of the log weights."""
    m = models.build("vae", "tiny", recon_std=0.5).eval()
    K, x = 64, torch.rand(2, 1, 8, 8) * 2 - 1
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        q = m.encode(x.repeat(K, 1, 1, 1))
        z = q.sample(g)
        log_lik = torch.distributions.Normal(m.decode(z), 0.5).log_prob(x.repeat(K, 1, 1, 1)).flatten(1).sum(1)
        log_prior = torch.distributions.Normal(0.0, 1.0).log_prob(z).flatten(1).sum(1)
        log_w = (log_lik + log_prior + q.nll(z)).view(K, 2)
        elbo = m.terms(x.repeat(K, 1, 1, 1), g)["elbo"].view(K, 2).mean(0)
    log_px = torch.logsumexp(log_w, 0) - math.log(K)
    assert (log_px >= elbo).all()
    spread = log_w.std(0) * 4 / math.sqrt(K)
    assert ((log_w.mean(0) - elbo).abs() < spread).all()


def test_prior_samples():
    m = models.build("vae", "tiny").eval()
    a = m.generate(5, torch.Generator().manual_seed(0))
    b = m.generate(5, torch.Generator().manual_seed(0))
    c = m.generate(5, torch.Generator().manual_seed(1))
    assert a.shape == (5, 1, 8, 8) and torch.isfinite(a).all() and a.abs().max() <= 1
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    # decode of z ~ N(0, I) drawn from the same generator
    z = torch.randn((5, *m.latent_shape), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(a, m.decode(z).clamp(-1, 1))


def test_evaluate_reports_elbo_and_sample_metrics():
    m = models.build("vae", "tiny")
    r = m.evaluate("test", 24, torch.Generator().manual_seed(0))
    assert r["elbo_nats"] < 0 and r["kl_nats"] >= 0
    assert r["elbo_bits_per_dim"] == pytest.approx(-r["elbo_nats"] / (64 * math.log(2)))
    assert {"value", "floor", "ceiling"} <= set(r["fd_digits_samples"]) and "kid_samples" in r
    assert isinstance(VAE.presets["sd"], dict)


@pytest.mark.long
def test_digits_training_beats_bicubic():
    train_digits("vae")
