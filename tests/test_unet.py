"""genkernels.models.unet: diffusers' UNet2DConditionModel weights load as they are and give the same outputs."""
import pytest
import torch

import genkernels
from genkernels.models.unet import SD15_UNET, UNet, UNetConfig, load_diffusers_unet

diffusers = pytest.importorskip("diffusers")

CONFIGS = {
    # text-conditioned, two levels, conv projections
    "cross_attn": dict(block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=24,
                       attention_head_dim=4, norm_num_groups=8, layers_per_block=1, in_channels=3, out_channels=3),
    # three levels, class-conditional + text, linear projections, AdaGN (scale_shift), heads per level
    "class_linear_scale_shift": dict(
        block_out_channels=(16, 32, 32), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=12,
        attention_head_dim=(2, 4, 4), norm_num_groups=8, layers_per_block=2, use_linear_projection=True,
        resnet_time_scale_shift="scale_shift", num_class_embeds=11, in_channels=1, out_channels=1),
    # class-conditional without attention, a plain ResNet mid block, 2 transformer layers elsewhere unused
    "class_resnet_only": dict(
        block_out_channels=(16, 32, 32), down_block_types=("DownBlock2D",) * 3, up_block_types=("UpBlock2D",) * 3,
        mid_block_type="UNetMidBlock2D", norm_num_groups=8, layers_per_block=1, num_class_embeds=5,
        in_channels=1, out_channels=2, cross_attention_dim=8, mid_block_scale_factor=2.0),
    # one level (no resampling), two transformer layers, no mid block
    "one_level": dict(block_out_channels=(16,), down_block_types=("CrossAttnDownBlock2D",),
                      up_block_types=("CrossAttnUpBlock2D",), mid_block_type=None, cross_attention_dim=8,
                      attention_head_dim=2, norm_num_groups=4, layers_per_block=1, transformer_layers_per_block=2,
                      in_channels=2, out_channels=2, freq_shift=1, flip_sin_to_cos=False),
}


def _diffusers_unet(cfg, seed=0):
    torch.manual_seed(seed)
    m = diffusers.UNet2DConditionModel(**cfg).eval()
    with torch.no_grad():   # random weights everywhere (diffusers zero-inits nothing here, but be sure)
        for p in m.parameters():
            p.normal_(0, 0.2)
    return m


@pytest.mark.parametrize("backend", ["reference", "auto"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_same_outputs_as_diffusers(name, backend):
    cfg = CONFIGS[name]
    m = _diffusers_unet(cfg)
    ours = load_diffusers_unet(m)
    g = torch.Generator().manual_seed(1)
    for size in (8, 10):   # 10: not divisible by 2^levels, the upsamplers follow the skips' sizes
        x = torch.randn(2, cfg["in_channels"], size, size, generator=g)
        ctx = torch.randn(2, 5, cfg["cross_attention_dim"], generator=g)
        labels = torch.tensor([1, 3]) if cfg.get("num_class_embeds") else None
        t = torch.tensor([10, 700])
        with torch.no_grad(), genkernels.use_backend(backend):
            ref = m(x, t, encoder_hidden_states=ctx, class_labels=labels).sample
            out = ours(x, t, encoder_hidden_states=ctx, class_labels=labels)
        assert out.shape == ref.shape
        torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)


def test_state_dict_and_config_and_scalar_timestep():
    cfg = CONFIGS["cross_attn"]
    m = _diffusers_unet(cfg, seed=3)
    ours = load_diffusers_unet(m.state_dict(), dict(m.config))
    x, ctx = torch.randn(3, 3, 8, 8), torch.randn(3, 7, 24)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, 250, encoder_hidden_states=ctx),
                                   m(x, 250, encoder_hidden_states=ctx).sample, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(ours(x, torch.tensor(250), encoder_hidden_states=ctx),
                                   ours(x, torch.full((3,), 250), encoder_hidden_states=ctx))


@pytest.mark.parametrize("onednn_layer", [False, True])
def test_cached_context_is_bit_identical_and_keyed_on_the_tensor(onednn_layer):
    from genkernels.models import onednn
    from genkernels.models.unet import _CONTEXT
    ours = load_diffusers_unet(_diffusers_unet(CONFIGS["cross_attn"], seed=4))
    g = torch.Generator().manual_seed(2)
    x, ctx, other = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 5, 24, generator=g), torch.randn(2, 5, 24, generator=g)
    k = ours.down_blocks[0].attentions[0].transformer_blocks[0].attn2.to_k
    if onednn_layer:   # the memo over either class a projection may have (use_onednn swaps wide ones only)
        k.__class__ = onednn.Linear
    cls = type(k)
    calls = []
    k.register_forward_hook(lambda m, a, y: calls.append(y))
    with torch.no_grad():
        plain = [ours(x, t, ctx) for t in (10, 500)] + [ours(x, 500, other)]
        n_plain = len(calls)
        with ours.cached_context():
            assert type(k) is _CONTEXT[cls] and isinstance(k, cls)
            cached = [ours(x, t, ctx) for t in (10, 500)] + [ours(x, 500, other)]
            assert calls[n_plain + 1] is calls[n_plain], "the same context tensor: projected once"
            assert calls[n_plain + 2] is not calls[n_plain + 1], "another context: projected again"
            ctx.add_(1.0)   # modified in place: its version changes, so it is projected again
            moved = ours(x, 500, ctx)
            assert calls[-1] is not calls[n_plain]
        assert type(k) is cls and "_memo" not in k.__dict__
        assert all(torch.equal(a, b) for a, b in zip(plain, cached))
        torch.testing.assert_close(moved, ours(x, 500, ctx), atol=0, rtol=0)
    with ours.cached_context():   # autograd records the calls: never reused
        ours(x, 500, ctx)
        ours(x, 500, ctx)
        assert calls[-1] is not calls[-2] and "_memo" not in k.__dict__


def test_gradients_flow_to_every_parameter():
    cfg = UNetConfig(**{k: v for k, v in CONFIGS["class_linear_scale_shift"].items()})
    unet = UNet(cfg)
    out = unet(torch.randn(2, 1, 8, 8), torch.tensor([3, 9]), torch.randn(2, 4, 12), torch.tensor([0, 10]))
    out.square().mean().backward()
    missing = [n for n, p in unet.named_parameters() if p.grad is None]
    assert not missing


def test_self_attention_only_unet():
    """cross_attention_dim=None: transformer blocks without attn2 (unconditional / class models)."""
    unet = UNet(UNetConfig(block_out_channels=(16, 32), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                           up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=None,
                           attention_head_dim=2, norm_num_groups=8, layers_per_block=1, in_channels=1,
                           out_channels=1))
    assert not any("attn2" in n for n, _ in unet.named_parameters())
    assert any("attn1" in n for n, _ in unet.named_parameters())
    assert unet(torch.randn(2, 1, 8, 8), 5).shape == (2, 1, 8, 8)


def test_sd15_preset_matches_diffusers_parameters():
    """The SD 1.5 preset has exactly diffusers' parameter names and shapes (built on the meta device)."""
    with torch.device("meta"):
        ours = UNet(UNetConfig(**SD15_UNET))
        theirs = diffusers.UNet2DConditionModel(**SD15_UNET)
    a = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    b = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    assert a == b
    assert sum(p.numel() for p in ours.parameters()) == 859_520_964   # SD 1.5's UNet


def test_errors():
    with pytest.raises(ValueError, match="class_embed_type"):
        UNetConfig.from_diffusers(dict(CONFIGS["cross_attn"], class_embed_type="timestep"))
    with pytest.raises(ValueError, match="down_block_types"):
        UNetConfig(block_out_channels=(8, 16), down_block_types=("AttnDownBlock2D", "DownBlock2D"),
                   up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)
    with pytest.raises(ValueError, match="one entry per level"):
        UNetConfig(block_out_channels=(8, 16), norm_num_groups=4)
    with pytest.raises(ValueError, match="resnet_time_scale_shift"):
        UNetConfig(resnet_time_scale_shift="ada_group")
    with pytest.raises(ValueError, match="config"):
        load_diffusers_unet({})
    with pytest.raises(TypeError):
        load_diffusers_unet(3)
    unet = UNet(UNetConfig(**CONFIGS["class_resnet_only"]))
    with pytest.raises(ValueError, match="class_labels"):
        unet(torch.randn(1, 1, 8, 8), 1)
    with pytest.raises(ValueError, match="sample"):
        unet(torch.randn(1, 3, 8, 8), 1, class_labels=torch.tensor([0]))
    with pytest.raises(ValueError, match="timestep"):
        unet(torch.randn(2, 1, 8, 8), torch.tensor([1, 2, 3]), class_labels=torch.tensor([0, 1]))
