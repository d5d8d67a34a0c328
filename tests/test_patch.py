"""genkernels.patch / unpatch on tiny random diffusers models, a whole StableDiffusionPipeline and plain
nn.Modules: outputs agree with the unpatched model (float32, bfloat16), unpatch is bit-identical,
weights are shared, and what cannot be patched is left alone and reported."""
import copy
import json

import pytest
import torch
from torch import nn

import genkernels
from genkernels.models import onednn
from genkernels.patch import MultiheadAttention, PatchReport

diffusers = pytest.importorskip("diffusers")
from diffusers import (AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionPipeline,  # noqa: E402
                       UNet2DConditionModel, UNet2DModel, VQModel)
from diffusers.models.attention_processor import Attention, AttnProcessor2_0  # noqa: E402
from diffusers.models.resnet import ResnetBlock2D  # noqa: E402


def tiny_unet_cond():
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=24, attention_head_dim=8, norm_num_groups=8).eval()


def tiny_unet():  # scale_shift time embedding, self-attention blocks
    torch.manual_seed(1)
    return UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(16, 32),
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                       norm_num_groups=8, attention_head_dim=8, resnet_time_scale_shift="scale_shift").eval()


def tiny_vae():
    torch.manual_seed(2)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32),
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         norm_num_groups=8, sample_size=16).eval()


def tiny_vq():
    torch.manual_seed(3)
    return VQModel(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32),
                   down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                   norm_num_groups=8, num_vq_embeddings=16, vq_embed_dim=4, sample_size=16).eval()


def unet_cond_inputs(dtype=torch.float32):
    g = torch.Generator().manual_seed(5)
    return (torch.randn(2, 4, 8, 8, generator=g).to(dtype), torch.tensor(37),
            torch.randn(2, 7, 24, generator=g).to(dtype))


def n_of(model, cls):
    return sum(isinstance(m, cls) for m in model.modules())


def reordered(*models):
    """The report counts of a diffusers model's onednn class swaps: its plain convolutions and linear layers."""
    counts = {"conv2d": sum(type(m) is nn.Conv2d for x in models for m in x.modules()),
              "linear": sum(type(m) is nn.Linear for x in models for m in x.modules())}
    return {k: n for k, n in counts.items() if n}


def close(a, b, dtype, what):
    """Within dtype rounding, relative to the output's scale (errors add up through the layers)."""
    tol = {torch.float32: 2e-5, torch.bfloat16: 3e-2}[dtype] * max(1.0, b.float().abs().max().item())
    err = (a.float() - b.float()).abs().max().item()
    assert err <= tol, f"{what}: max |patched - diffusers| = {err:.3g} > {tol:.3g}"


def check_patch_unpatch(model, run, dtype=torch.float32):
    """Patches `model`; returns the report after checking parity, shared weights and a bit-exact unpatch."""
    with torch.no_grad():
        before = run(model)
    params = {k: v for k, v in model.state_dict(keep_vars=True).items()}
    report = genkernels.patch(model)
    after_params = model.state_dict(keep_vars=True)
    assert list(after_params) == list(params)
    assert all(after_params[k] is params[k] for k in params), "weights must be shared, not copied"
    with torch.no_grad():
        close(run(model), before, dtype, type(model).__name__)
        copy.deepcopy(model)   # with oneDNN's reordered weights cached (opaque tensors, not copied)
    assert genkernels.unpatch(model) > 0
    assert not any("_onednn" in m.__dict__ for m in model.modules()), "unpatch drops the reordered weights"
    with torch.no_grad():
        assert torch.equal(run(model), before), "unpatch must restore bit-identical outputs"
    return report


# --------------------------------------------------------------------------------------- diffusers models
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_unet2d_condition(dtype):
    unet = tiny_unet_cond().to(dtype)
    x, t, c = unet_cond_inputs(dtype)
    report = check_patch_unpatch(unet, lambda m: m(x, t, c).sample, dtype)
    assert report.counts() == {"resnet_block": n_of(unet, ResnetBlock2D), "attention": n_of(unet, Attention), "norm_out": 1,
                               **reordered(unet)}
    assert type(unet.down_blocks[0].resnets[0]) is ResnetBlock2D and type(unet.conv_in) is nn.Conv2d
    assert all(type(m.processor) is AttnProcessor2_0 for m in unet.modules() if isinstance(m, Attention))
    # the transformer blocks' GroupNorm feeds proj_in, not a SiLU: left, with the reason
    assert {k for _, k, _ in report.left} == {"group_norm"}


def test_every_plain_linear_layer_is_swapped():
    """Each call picks its kernel by shape (onednn.Linear), so every plain linear layer is swapped: few rows on
    conv_rows, many on oneDNN (wide layers) or F.linear."""
    from diffusers import ModelMixin

    class Wide(ModelMixin):   # diffusers' model base class: patch swaps the layers inside
        def __init__(self):
            super().__init__()
            self.up, self.down = nn.Linear(256, 2048), nn.Linear(2048, 256)   # 4x wider out, 2^19 weights; narrower

        def forward(self, x):
            return self.down(self.up(x))

    for rows in (8, 40):
        model = Wide().eval()
        report = check_patch_unpatch(model, lambda m: m(torch.randn(rows, 256, generator=torch.Generator().manual_seed(0))))
        assert report.patched == [("up", "linear"), ("down", "linear")] and not report.left


def test_unet2d_scale_shift_training_gradients():
    unet = tiny_unet()
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([3, 500])
    report = check_patch_unpatch(unet, lambda m: m(x, t).sample)
    assert report.counts() == {"resnet_block": n_of(unet, ResnetBlock2D), "attention": n_of(unet, Attention), "norm_out": 1,
                               **reordered(unet)}
    assert all(b.time_embedding_norm == "scale_shift" for b in unet.modules() if isinstance(b, ResnetBlock2D))

    ref = copy.deepcopy(unet).train()
    unet.train()
    genkernels.patch(unet)
    for m in (ref, unet):
        m.zero_grad()
        m(x, t).sample.square().mean().backward()
    grads = dict(unet.named_parameters())
    for name, p in ref.named_parameters():
        torch.testing.assert_close(grads[name].grad, p.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_autoencoder_kl():
    vae = tiny_vae()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    report = check_patch_unpatch(vae, lambda m: m(x, sample_posterior=False).sample)
    assert report.counts() == {"resnet_block": n_of(vae, ResnetBlock2D), "attention": 2, "norm_out": 2, **reordered(vae)}


def test_vq_model():
    vq = tiny_vq()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        h = vq.encode(x).latents
        _, _, (_, _, idx0) = vq.quantize(h)
    report = check_patch_unpatch(vq, lambda m: m(x).sample)
    assert report.counts()["vq_quantizer"] == 1
    genkernels.patch(vq)
    with torch.no_grad():
        _, _, (_, _, idx1) = vq.quantize(h)
    assert torch.equal(idx0, idx1)


def test_pipeline_float32_and_scheduler_swap():
    from transformers import CLIPTextConfig, CLIPTextModel
    torch.manual_seed(4)
    text_encoder = CLIPTextModel(CLIPTextConfig(hidden_size=24, intermediate_size=32, num_attention_heads=2,
                                                num_hidden_layers=1, vocab_size=64, max_position_embeddings=8))
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=8, sample_size=16)
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=None, unet=tiny_unet_cond(),
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(1, 7, 24, generator=g)
    neg = torch.randn(1, 7, 24, generator=g)
    latents = torch.randn(1, 4, 8, 8, generator=g)

    def run(p):
        return p(prompt_embeds=emb, negative_prompt_embeds=neg, latents=latents, num_inference_steps=3,
                 guidance_scale=7.5, height=16, width=16, output_type="pt").images

    with torch.no_grad():
        before = run(pipe)
    swaps = reordered(pipe.unet, vae)   # not the text encoder (transformers')
    report = genkernels.patch(pipe)
    assert report.counts() == {"scheduler": 1, "norm_out": 3, "resnet_block": n_of(pipe.unet, ResnetBlock2D) + n_of(vae, ResnetBlock2D),
                               "attention": n_of(pipe.unet, Attention) + n_of(vae, Attention),
                               **swaps}
    assert isinstance(pipe.scheduler, genkernels.nn.DDIMScheduler)
    assert any(n.startswith("scheduler:") for n in report.notes) and "note: scheduler" in str(report)
    assert any(p.startswith("vae.") for p, _ in report.patched) and any(p.startswith("unet.") for p, _ in report.patched)
    with torch.no_grad():
        close(run(pipe), before, torch.float32, "pipeline")
    genkernels.unpatch(pipe)
    assert pipe.scheduler is scheduler
    with torch.no_grad():
        assert torch.equal(run(pipe), before)


def test_scheduler_left_when_not_fusable():
    class Holder:  # any pipeline-like object: components with a scheduler
        def __init__(self, scheduler):
            self.scheduler = scheduler

        @property
        def components(self):
            return {"scheduler": self.scheduler}

    h = Holder(DDPMScheduler(variance_type="learned"))
    report = genkernels.patch(h)
    assert len(report) == 0 and report.left[0][1] == "scheduler" and "learned" in report.left[0][2]
    h = Holder(DDPMScheduler())
    assert genkernels.patch(h).counts() == {"scheduler": 1} and isinstance(h.scheduler, genkernels.nn.DDPMScheduler)


def test_attention_variants_left_on_diffusers():
    attn = Attention(16, heads=2, dim_head=8, scale_qk=False)  # diffusers picks AttnProcessor (uses attn.scale)
    x = torch.randn(2, 5, 16)
    assert genkernels.patch(attn).counts() == {"attention": 1}
    with torch.no_grad():
        close(attn(x), attn.processor.fallback(attn, x),
              torch.float32, "scale_qk=False")
    attn = Attention(16, heads=2, dim_head=8, scale_qk=False, processor=AttnProcessor2_0())  # ignores attn.scale
    report = genkernels.patch(attn)
    assert len(report) == 0 and "scale" in report.left[0][2]
    attn = Attention(16, heads=2, dim_head=8, added_kv_proj_dim=12)
    report = genkernels.patch(attn)
    assert len(report) == 0 and report.left[0][1] == "attention"


def test_attention_mask_uses_the_replaced_processor():
    attn = Attention(16, heads=2, dim_head=8).eval()
    x = torch.randn(2, 5, 16)
    mask = torch.zeros(2, 1, 5)
    mask[1, :, 3:] = -10000.0
    with torch.no_grad():
        ref = attn(x, attention_mask=mask)
    genkernels.patch(attn)
    with torch.no_grad():
        assert torch.equal(attn(x, attention_mask=mask), ref)
        close(attn(x), AttnProcessor2_0()(attn, x), torch.float32, "attention")


def test_resnet_block_with_other_activation_left():
    block = ResnetBlock2D(in_channels=16, temb_channels=8, groups=4, non_linearity="mish")
    report = genkernels.patch(block)
    assert len(report) == 0 and "Mish" in report.left[0][2] and type(block) is ResnetBlock2D


# --------------------------------------------------------------------------------------- plain nn.Module
def test_sequential_group_norm_silu_and_instance_norm():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.GroupNorm(4, 16), nn.SiLU(), nn.Conv2d(16, 8, 1),
                          nn.InstanceNorm2d(8, affine=True), nn.InstanceNorm2d(8), nn.GroupNorm(2, 8),
                          nn.InstanceNorm2d(8, track_running_stats=True)).eval()
    x = torch.randn(2, 3, 6, 6)
    report = check_patch_unpatch(model, lambda m: m(x))
    assert report.counts() == {"group_norm_silu": 1, "instance_norm": 2}
    assert sorted(k for _, k, _ in report.left) == ["group_norm", "instance_norm"]
    assert type(model[1]) is nn.GroupNorm and type(model[2]) is nn.SiLU

    # training: gradients equal the unpatched model's
    ref = copy.deepcopy(model).train()
    model.train()
    genkernels.patch(model)
    assert isinstance(model[1], genkernels.nn.GroupNormSiLU) and model[1].training
    for m in (ref, model):
        m(x).square().mean().backward()
    for (name, p), q in zip(ref.named_parameters(), model.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention(batch_first):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    x = torch.randn(3, 5, 16)
    ctx = torch.randn(3, 7, 16)
    if not batch_first:
        x, ctx = x.transpose(0, 1).contiguous(), ctx.transpose(0, 1).contiguous()
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[1, 4:] = True
    with torch.no_grad():
        self_ref = mha(x, x, x, need_weights=False)[0]
        cross_ref = mha(x, ctx, ctx, key_padding_mask=pad, need_weights=False)[0]
        weights_ref = mha(x, x, x)
    assert genkernels.patch(mha).counts() == {"multihead_attention": 1}
    assert type(mha) is MultiheadAttention
    with torch.no_grad():
        close(mha(x, x, x, need_weights=False)[0], self_ref, torch.float32, "mha self")
        close(mha(x, ctx, ctx, key_padding_mask=pad, need_weights=False)[0], cross_ref, torch.float32, "mha cross")
        out, w = mha(x, x, x)  # need_weights=True (torch's default): torch's own path
        assert torch.equal(out, weights_ref[0]) and torch.equal(w, weights_ref[1])
    layer = nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, batch_first=True).eval()
    y = torch.randn(2, 5, 16)
    with torch.no_grad():
        before = layer(y)
        genkernels.patch(layer)
        close(layer(y), before, torch.float32, "TransformerEncoderLayer")
    mha_bias_kv = nn.MultiheadAttention(16, 4, add_bias_kv=True)
    assert genkernels.patch(mha_bias_kv).left[0][2] == "add_bias_kv=True"


def test_nothing_to_patch():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    state = copy.deepcopy(model.state_dict())
    report = genkernels.patch(model)
    assert len(report) == 0 and report.left == [] and report.to_dict()["patched"] == {}
    assert not hasattr(model, "_genkernels_patch") and genkernels.unpatch(model) == 0
    assert [type(m) for m in model] == [nn.Linear, nn.ReLU, nn.Linear]
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_report_printable_dict_and_ops_filter():
    unet = tiny_unet_cond()
    report = genkernels.patch(unet, ops=["attention"])
    assert report.counts() == {"attention": 8}
    assert isinstance(report, PatchReport) and "attention" in str(report)
    d = json.loads(json.dumps(report.to_dict()))
    assert d["patched"] == {"attention": 8} and len(d["patched_modules"]) == 8
    assert len(d["notes"]) == 1 and "attention_mask" in d["notes"][0]
    genkernels.unpatch(unet)
    with pytest.raises(ValueError, match="ops"):
        genkernels.patch(unet, ops=["conv"])
    with pytest.raises(TypeError, match="ops"):
        genkernels.patch(unet, ops="attention")
    with pytest.raises(ValueError, match="backend"):
        genkernels.patch(unet, backend="tpu")
    with pytest.raises(ValueError, match="backend"):
        genkernels.patch(unet, backend="cuda")  # CPU model
    with pytest.raises(TypeError, match="model"):
        genkernels.patch(object())


def test_to_dtype_state_dict_and_backend():
    unet = tiny_unet_cond()
    x, t, c = unet_cond_inputs()
    genkernels.patch(unet, backend="reference")
    sd = unet.state_dict()
    fresh = tiny_unet_cond()
    fresh.load_state_dict(sd)  # the patched model's state dict loads into an unpatched one
    unet.load_state_dict(fresh.state_dict())
    with torch.no_grad():
        with genkernels.use_backend("reference"):
            ref = unet(x, t, c).sample
        genkernels.use_backend("cpu")
        assert torch.equal(unet(x, t, c).sample, ref)  # patch's backend wins inside the forward
        assert genkernels.current_backend() == "cpu"
        genkernels.use_backend("auto")
        unet.to(torch.bfloat16)
        close(unet(x.bfloat16(), t, c.bfloat16()).sample, fresh.to(torch.bfloat16)(x.bfloat16(), t, c.bfloat16()).sample,
              torch.bfloat16, "after .to(bfloat16)")


def test_compile_fullgraph():
    torch._dynamo.reset()
    block = ResnetBlock2D(in_channels=16, out_channels=32, temb_channels=8, groups=4,
                          time_embedding_norm="scale_shift").eval()
    attn = Attention(32, heads=2, dim_head=16, norm_num_groups=4, residual_connection=True).eval()
    seq = nn.Sequential(nn.GroupNorm(4, 32), nn.SiLU(), nn.Conv2d(32, 8, 1))
    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()

    def f(x, temb):
        h = seq(attn(block(x, temb)))
        s = h.flatten(2).transpose(1, 2)
        return mha(s, s, s, need_weights=False)[0]

    x, temb = torch.randn(2, 16, 4, 4), torch.randn(2, 8)
    with torch.no_grad():
        ref = f(x, temb)
        report = genkernels.patch(block)
        for m in (attn, seq, mha):
            report.patched += genkernels.patch(m).patched
        assert len(report) == 4
        out = torch.compile(f, fullgraph=True, backend="aot_eager")(x, temb)
    close(out, ref, torch.float32, "compiled")
