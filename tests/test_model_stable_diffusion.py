"""Stable Diffusion (genkernels/models/stable_diffusion.py) against diffusers' StableDiffusionPipeline on a
tiny random pipeline built from configs offline: the text encoder, UNet, VAE and the whole text-to-image
loop give the same numbers for the same prompts, latents and scheduler; CFG semantics; input errors."""
import pytest
import torch

import genkernels
from genkernels import cli, data
from genkernels.models.stable_diffusion import StableDiffusion, StableDiffusionConfig, TINY
from test_model_clip import write_tiny_bpe

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")


def tiny_tokenizer(tmp_path, max_length=12):
    write_tiny_bpe(tmp_path)
    tok = transformers.CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    tok.model_max_length = max_length
    return tok


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    torch.manual_seed(0)
    tok = tiny_tokenizer(tmp_path_factory.mktemp("tok"))
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=12, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
        pad_token_id=tok.pad_token_id)).eval()
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=2, norm_num_groups=8).eval()
    vae = diffusers.AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(8, 16),
                                  down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                                  latent_channels=4, norm_num_groups=4, sample_size=16).eval()
    sched = diffusers.DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                    clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    p = diffusers.StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=sched,
                                          safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    p.set_progress_bar_config(disable=True)
    return p


PROMPTS = ["a hat", "abc def ghi jkl mno pqr stu"]  # the second is longer than the 12-token context


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_components_match_diffusers(pipe, backend):
    ours = StableDiffusion.from_diffusers(pipe)
    with torch.no_grad(), genkernels.use_backend(backend):
        emb, _ = pipe.encode_prompt(PROMPTS, "cpu", 1, False)
        torch.testing.assert_close(ours.encode_prompt(PROMPTS), emb, atol=1e-5, rtol=1e-5)
        z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(ours.unet(z, 37, encoder_hidden_states=emb),
                                   pipe.unet(z, 37, encoder_hidden_states=emb).sample, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(ours.vae.decode(z), pipe.vae.decode(z).sample, atol=1e-4, rtol=1e-4)
    assert ours.latent_scale.item() == pytest.approx(pipe.vae.config.scaling_factor)


@pytest.mark.parametrize("guidance,eta", [(7.5, 0.0), (1.0, 0.0), (4.0, 0.5)])
def test_pipeline_matches_diffusers(pipe, guidance, eta):
    """The whole loop: prompts of different lengths (one truncated), negative prompts, CFG, DDIM (eta > 0
    draws its noise from the generator as diffusers does), decode."""
    ours = StableDiffusion.from_diffusers(pipe)
    latents = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    kw = dict(negative_prompt=["", "b"], num_images_per_prompt=2, guidance_scale=guidance, eta=eta,
              num_inference_steps=4)
    expect = pipe(PROMPTS, latents=latents, generator=torch.Generator().manual_seed(3), output_type="pt", **kw).images
    got = ours.text_to_image(PROMPTS, latents=latents, generator=torch.Generator().manual_seed(3), **kw)
    assert got.shape == (4, 3, 16, 16)
    torch.testing.assert_close(got / 2 + 0.5, expect, atol=2e-4, rtol=1e-4)


def test_guidance_semantics_and_seeds(pipe):
    ours = StableDiffusion.from_diffusers(pipe)
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    lat = dict(num_inference_steps=3, output_latents=True)
    # w = 1 (the unconditional half skipped) equals the fused guided step at w = 1 up to rounding
    w1 = ours.text_to_image("a hat", guidance_scale=1.0, generator=g(), **lat)
    w1_fused = ours.text_to_image("a hat", guidance_scale=1.0 + 1e-12, generator=g(), **lat)
    torch.testing.assert_close(w1, w1_fused, atol=1e-5, rtol=1e-5)
    # w = 0: the negative prompt alone, i.e. the conditional model on the negative prompt
    w0 = ours.text_to_image("a hat", negative_prompt="b", guidance_scale=0.0, generator=g(), **lat)
    torch.testing.assert_close(w0, ours.text_to_image("b", guidance_scale=1.0, generator=g(), **lat),
                               atol=1e-5, rtol=1e-5)
    # seeds: same seed same images, another seed other images; a batch row equals the same prompt alone
    a = ours.text_to_image(["a hat", "b"], generator=g(), **lat)
    assert torch.equal(a, ours.text_to_image(["a hat", "b"], generator=g(), **lat))
    assert not torch.allclose(a, ours.text_to_image(["a hat", "b"], generator=torch.Generator().manual_seed(6), **lat))


def test_errors(pipe):
    ours = StableDiffusion.from_diffusers(pipe)
    with pytest.raises(ValueError, match="`negative_prompt` has 1 entries but `prompt` has 2"):
        ours.text_to_image(["a", "b"], negative_prompt=["c"])
    with pytest.raises(ValueError, match="multiples of the VAE factor 2"):
        ours.text_to_image("a", height=15, width=16)
    with pytest.raises(ValueError, match="`guidance_scale` must be >= 0"):
        ours.text_to_image("a", guidance_scale=-1.0)
    with pytest.raises(ValueError, match="`latents` must have shape"):
        ours.text_to_image("a", latents=torch.zeros(1, 4, 4, 4))
    with pytest.raises(ValueError, match="not a diffusers pipeline folder"):
        StableDiffusion.from_pretrained("/nonexistent")
    with pytest.raises(ValueError, match="`guidance` must be >= 0"):
        StableDiffusionConfig(**dict(TINY, guidance=-1.0))


def test_from_pretrained_folder(pipe, tmp_path):
    """A local diffusers-layout folder (what `genkernels sample stable_diffusion --from-pretrained DIR`
    reads), offline."""
    pipe.save_pretrained(tmp_path / "sd", safe_serialization=True)
    ours = StableDiffusion.from_pretrained(str(tmp_path / "sd"))
    img = ours.generate(1, torch.Generator().manual_seed(0), prompt=["a hat"], steps=2)
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    expect = pipe("a hat", latents=latents, num_inference_steps=2, guidance_scale=7.5, output_type="pt").images
    torch.testing.assert_close(img / 2 + 0.5, expect, atol=2e-4, rtol=1e-4)
    png = tmp_path / "out.png"
    assert cli.main(["sample", "stable_diffusion", "--from-pretrained", str(tmp_path / "sd"), "--prompt", "a hat",
                     "--prompt", "b", "--num", "2", "--steps", "2", "--out", str(png)]) == 0
    assert png.stat().st_size > 0
    assert cli.main(["sample", "stable_diffusion", "--prompt", "a"]) != 0   # neither checkpoint nor folder


def test_tiny_trains_on_captions():
    torch.manual_seed(0)
    m = StableDiffusion(StableDiffusionConfig(**TINY))
    batch = {k: v[:8] for k, v in data.load("digits", "train", image_size=8).items()}
    assert m.phases(0) == ("ae",) and m.phases(TINY["ae_steps"]) == ("main",)
    opt = m.optimizers()
    before = m.text_encoder.encoder.layers[0].self_attn.q_proj.weight.clone()
    for step in range(4):
        for phase in m.phases(step):
            loss, logs = m(batch, phase, step)
            assert torch.isfinite(loss)
            opt[phase].zero_grad()
            loss.backward()
            opt[phase].step()
    assert not torch.equal(before, m.text_encoder.encoder.layers[0].self_attn.q_proj.weight)  # text encoder learns
    assert m.latent_scale.item() > 0
    img = m.generate(3, torch.Generator().manual_seed(0))
    assert img.shape == (3, 1, 8, 8) and img.abs().max() <= 1
