"""vqvae: diffusers VQModel parity (load_diffusers_vq), the straight-through gradient, the losses,
codebook usage and dead-code restart at the model level."""
import pytest
import torch
import torch.nn.functional as F

import genkernels
from genkernels import metrics, models

from autoencoder_helpers import BACKENDS, close, random_diffusers, train_digits

diffusers = pytest.importorskip("diffusers")


CONFIGS = [
    dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
         up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
         latent_channels=4, num_vq_embeddings=32, norm_num_groups=4, sample_size=16),
    dict(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 3,
         up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 8, 16), layers_per_block=2,
         latent_channels=3, vq_embed_dim=5, num_vq_embeddings=64, norm_num_groups=2, sample_size=16,
         mid_block_add_attention=False),
]


def _random_vq(cfg, seed=0):
    m = random_diffusers(diffusers.VQModel, cfg, seed)
    with torch.no_grad():
        m.quantize.embedding.weight.normal_()   # codes on the scale of the latents
    return m


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ci", range(len(CONFIGS)))
def test_load_diffusers_vq_same_encode_decode(backend, ci):
    cfg = CONFIGS[ci]
    theirs = _random_vq(cfg, ci)
    ours = models.load_diffusers_vq(theirs).eval()
    assert ours.quantize.legacy and not ours.quantize.ema and ours.quantize.beta == 0.25
    x = torch.rand(2, cfg["in_channels"], 16, 16) * 2 - 1
    with torch.no_grad(), genkernels.use_backend(backend):
        h = theirs.encode(x).latents
        close(ours.encode(x), h)
        q_theirs, loss_theirs, (_, _, idx_theirs) = theirs.quantize(h)
        q_ours = ours.quantize(h)
        assert torch.equal(q_ours.indices.flatten(), idx_theirs.flatten())
        close(q_ours.quantized, q_theirs)
        close(q_ours.loss, loss_theirs)
        close(ours.decode(h), theirs.decode(h).sample)
        close(ours.decode(h, force_not_quantize=True), theirs.decode(h, force_not_quantize=True).sample)
        close(ours.decode_indices(q_ours.indices), theirs.decode(h).sample)


def test_load_from_state_dict_and_errors():
    theirs = _random_vq(CONFIGS[0])
    ours = models.load_diffusers_vq(theirs.state_dict(), dict(theirs.config)).eval()
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        close(ours.reconstruct(x), theirs(x).sample)
    with pytest.raises(ValueError, match="norm_type"):
        models.load_diffusers_vq(theirs.state_dict(), dict(theirs.config, norm_type="spatial"))
    with pytest.raises(ValueError, match="config"):
        models.load_diffusers_vq(theirs.state_dict())


def test_straight_through_gradient_and_loss():
    """The decoder's gradient reaches the encoder output unchanged (dq/dh = I); the loss is
    mse + beta * |h - sg(e)|^2 with the EMA codebook (no codebook term)."""
    m = models.build("vqvae", "tiny")
    x = torch.rand(8, 1, 8, 8) * 2 - 1
    m({"image": x})              # first training batch: k-means++ initialisation of the codebook
    h = m.encode(x)
    vq = m.quantize_frozen(h)
    mse = F.mse_loss(m.decoder(m.post_quant_conv(vq.quantized)), x)
    g_h, g_q = torch.autograd.grad(mse, [h, vq.quantized])
    assert g_h.abs().sum() > 0
    torch.testing.assert_close(g_h, g_q)
    e = m.quantize.embedding.weight[vq.indices].permute(0, 3, 1, 2)
    torch.testing.assert_close(vq.quantized, e)
    torch.testing.assert_close(vq.loss, 0.25 * F.mse_loss(h, e))
    torch.manual_seed(0)
    loss, logs = m({"image": x})
    torch.testing.assert_close(loss, logs["mse"] + logs["commitment"])
    assert not m.quantize.embedding.weight.requires_grad   # EMA: no gradient to the codebook


def test_codebook_updates_only_in_training_forward():
    m = models.build("vqvae", "tiny")
    x = torch.rand(8, 1, 8, 8) * 2 - 1
    m({"image": x})
    before = {k: v.clone() for k, v in m.quantize.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    m.preview({"image": x}, g)           # in training mode: inference must not move the codebook
    m.reconstruct(x)
    m.evaluate("test", 16)
    for k, v in m.quantize.state_dict().items():
        assert torch.equal(v, before[k]), k
    m({"image": x})
    assert not torch.equal(m.quantize.embedding.weight, before["embedding.weight"])


def test_dead_codes_are_restarted_from_the_batch():
    m = models.build("vqvae", "tiny")
    x = torch.rand(8, 1, 8, 8) * 2 - 1
    m({"image": x})
    with torch.no_grad():       # codes 8.. far from every latent: never chosen, running usage 0
        m.quantize.embedding.weight[8:] = 1e3
        m.quantize.ema_embed_sum[8:] = 1e3 * m.quantize.ema_cluster_size[8:, None]
        m.quantize.ema_cluster_size[8:] = 0.0
    m({"image": x})
    w = m.quantize.embedding.weight[8:]
    assert w.abs().max() < 100          # restarted at encoder outputs of the batch
    h = m.encode(x).detach().permute(0, 2, 3, 1).reshape(-1, w.shape[1])
    assert (w[:, None] - h[None]).abs().amax(-1).min(1).values.max() < 1e-5   # each one is a batch vector


def test_evaluate_reports_codebook_usage():
    m = models.build("vqvae", "tiny")
    m({"image": torch.rand(8, 1, 8, 8) * 2 - 1})
    r = m.evaluate("test", 32)
    x = m._held_out(32, None)
    with torch.no_grad():
        idx = m.quantize_frozen(m.encode(x)).indices
    want = metrics.codebook_usage(idx, 16)
    assert r["codebook"]["perplexity"] == pytest.approx(want["perplexity"])
    assert r["codebook"]["usage"] == pytest.approx(want["usage"]) and r["codebook"]["num_codes"] == 16
    assert r["latent_numbers"] == 16 and r["baseline_bicubic"]["size"] == [4, 4]
    assert r["baseline_bicubic_code_vectors"]["numbers"] == 64


@pytest.mark.long
def test_digits_training_beats_bicubic():
    r = train_digits("vqvae")
    assert r["codebook"]["usage"] > 0.5
