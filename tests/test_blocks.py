"""genkernels.models.blocks against the diffusers modules with the same weights (float32)."""
import pytest
import torch

import genkernels
from genkernels.models import blocks

from autoencoder_helpers import BACKENDS, close

d_resnet = pytest.importorskip("diffusers.models.resnet")
from diffusers.models import downsampling as d_down, embeddings as d_emb, upsampling as d_up  # noqa: E402
from diffusers.models.autoencoders import vae as d_vae  # noqa: E402
from diffusers.models.unets import unet_2d_blocks as d_blocks  # noqa: E402

# the CPU kernels and the reference (the Triton interpreter is slow and covered by the op tests)


def _randomize(module, seed=0):
    """Random values in every parameter (GroupNorm weights away from 1, biases away from 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if "norm" in name and name.endswith("weight") else 0.0))
    return module


def _pair(theirs, ours, seed=0):
    """Our module with the (randomised) diffusers module's state dict, loaded strictly."""
    _randomize(theirs, seed).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours.eval()


def _check(theirs, ours, *inputs, grad=True, ours_kwargs=None, theirs_kwargs=None):
    xs_a = [x.clone().requires_grad_(grad and x.is_floating_point()) for x in inputs]
    xs_b = [x.clone().requires_grad_(grad and x.is_floating_point()) for x in inputs]
    want = theirs(*xs_a, **(theirs_kwargs or {}))
    got = ours(*xs_b, **(ours_kwargs or {}))
    close(got, want, "output")
    if grad:
        g = torch.randn_like(want)
        want.backward(g)
        got.backward(g)
        for a, b in zip(xs_a, xs_b):
            if a.grad is not None:
                close(b.grad, a.grad, "input grad")
        mine = dict(ours.named_parameters())
        # The key bias's exact gradient is 0 (it adds q.b to a whole row of logits, which softmax
        # cancels): what both compute is rounding of terms as large as the other gradients, so every
        # parameter gradient is held to ulps of the module's largest one.
        gmax = max((p.grad.abs().max().item() for p in theirs.parameters() if p.grad is not None), default=0.0)
        for n, pa in theirs.named_parameters():
            close(mine[n].grad, pa.grad, f"grad of {n}", scale=gmax)


@pytest.fixture(params=BACKENDS)
def backend(request):
    with genkernels.use_backend(request.param):
        yield request.param


@pytest.mark.parametrize("cfg", [
    dict(in_channels=8, out_channels=16, temb_channels=12, groups=4),
    dict(in_channels=8, out_channels=8, temb_channels=12, groups=2, time_embedding_norm="scale_shift"),
    dict(in_channels=16, out_channels=8, temb_channels=None, groups=4, output_scale_factor=2.0),
    dict(in_channels=8, out_channels=8, temb_channels=6, groups=4, groups_out=2, skip_time_act=True),
    dict(in_channels=8, out_channels=8, temb_channels=6, groups=4, up=True, use_in_shortcut=True),
    dict(in_channels=8, out_channels=12, temb_channels=None, groups=4, down=True, conv_shortcut_bias=False),
])
def test_resnet_block(backend, cfg):
    torch.manual_seed(0)
    theirs = d_resnet.ResnetBlock2D(**cfg)
    cfg = dict(cfg)
    ours = _pair(theirs, blocks.ResnetBlock2D(cfg.pop("in_channels"), cfg.pop("out_channels"), **cfg))
    x = torch.randn(2, theirs.in_channels, 6, 6) + 0.5
    temb = torch.randn(2, cfg["temb_channels"]) if cfg["temb_channels"] else None
    _check(theirs, ours, x, *([temb] if temb is not None else []),
           theirs_kwargs={} if temb is not None else dict(temb=None))


def test_resnet_block_errors():
    with pytest.raises(ValueError, match="time_embedding_norm"):
        blocks.ResnetBlock2D(8, 8, temb_channels=4, groups=4, time_embedding_norm="ada_group")
    block = blocks.ResnetBlock2D(8, 8, temb_channels=4, groups=4)
    with pytest.raises(ValueError, match="temb"):
        block(torch.randn(1, 8, 4, 4))


@pytest.mark.parametrize("heads_dim,scale_shift", [(16, False), (4, False), (8, True)])
def test_mid_block_with_attention(backend, heads_dim, scale_shift):
    """diffusers' UNetMidBlock2D (ResNet, Attention with group_norm and residual, ResNet)."""
    torch.manual_seed(0)
    norm = "scale_shift" if scale_shift else "default"
    theirs = d_blocks.UNetMidBlock2D(16, temb_channels=10, resnet_groups=4, attention_head_dim=heads_dim,
                                     resnet_time_scale_shift=norm, output_scale_factor=1.5)
    ours = _pair(theirs, blocks.UNetMidBlock2D(16, 10, groups=4, attention_head_dim=heads_dim,
                                               time_embedding_norm=norm, output_scale_factor=1.5))
    assert (ours.attentions[0].group_norm is None) == scale_shift
    _check(theirs, ours, torch.randn(2, 16, 5, 3) + 1.0, torch.randn(2, 10))


def test_spatial_attention_errors():
    with pytest.raises(ValueError, match="dim_head"):
        blocks.SpatialSelfAttention(16, 5, groups=4)
    with pytest.raises(ValueError, match="x"):
        blocks.SpatialSelfAttention(16, groups=4)(torch.randn(2, 7, 16))


@pytest.mark.parametrize("cfg", [dict(use_conv=True, padding=0), dict(use_conv=True, padding=1, out_channels=6),
                                 dict(use_conv=False)])
def test_downsample(cfg):
    theirs = d_down.Downsample2D(4, name="op", **cfg)
    ours = _pair(theirs, blocks.Downsample2D(4, **cfg))
    _check(theirs, ours, torch.randn(2, 4, 7, 8))


@pytest.mark.parametrize("cfg,size", [(dict(use_conv=True), None), (dict(use_conv=True, out_channels=6), (9, 11)),
                                      (dict(use_conv=False), None), (dict(use_conv_transpose=True), None),
                                      (dict(use_conv=True, interpolate=False), None)])
def test_upsample(cfg, size):
    theirs = d_up.Upsample2D(4, **cfg)
    ours = _pair(theirs, blocks.Upsample2D(4, **cfg))
    x = torch.randn(2, 4, 5, 6)
    if list(theirs.parameters()):
        _check(theirs, ours, x, ours_kwargs=dict(output_size=size), theirs_kwargs=dict(output_size=size))
    else:
        torch.testing.assert_close(ours(x, size), theirs(x, size))


@pytest.mark.parametrize("dim,flip,shift,scale", [(32, True, 0.0, 1.0), (32, False, 1.0, 1.0), (17, True, 1.0, 2.0),
                                                  (64, False, 0.0, 1000.0)])
def test_timesteps(dim, flip, shift, scale):
    t = torch.tensor([0.0, 1.0, 17.5, 999.0])
    want = d_emb.Timesteps(dim, flip, shift, scale)(t)
    got = blocks.Timesteps(dim, flip, shift, scale)(t)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert got.shape == (4, dim)
    with pytest.raises(ValueError, match="timesteps"):
        blocks.timestep_embedding(t[None], dim)


@pytest.mark.parametrize("cfg", [dict(), dict(out_dim=7, post_act_fn="silu", cond_proj_dim=5),
                                 dict(act_fn="gelu", sample_proj_bias=False)])
def test_timestep_embedding(cfg):
    theirs = d_emb.TimestepEmbedding(8, 16, **cfg)
    ours = _pair(theirs, blocks.TimestepEmbedding(8, 16, **cfg))
    x = torch.randn(3, 8)
    if "cond_proj_dim" in cfg:
        c = torch.randn(3, 5)
        _check(theirs, ours, x, c)
    else:
        _check(theirs, ours, x)


@pytest.mark.parametrize("chans,layers,attn", [((8, 16), 1, True), ((8, 8, 16), 2, False)])
def test_encoder_decoder(backend, chans, layers, attn):
    torch.manual_seed(0)
    n = len(chans)
    enc_t = d_vae.Encoder(3, 4, ("DownEncoderBlock2D",) * n, chans, layers, norm_num_groups=4,
                          double_z=True, mid_block_add_attention=attn)
    enc = _pair(enc_t, blocks.Encoder(3, 4, chans, layers, norm_num_groups=4, double_z=True,
                                      mid_block_add_attention=attn))
    x = torch.randn(2, 3, 12, 12)
    _check(enc_t, enc, x)
    dec_t = d_vae.Decoder(4, 3, ("UpDecoderBlock2D",) * n, chans, layers, norm_num_groups=4,
                          mid_block_add_attention=attn)
    dec = _pair(dec_t, blocks.Decoder(4, 3, chans, layers, norm_num_groups=4, mid_block_add_attention=attn), 1)
    _check(dec_t, dec, torch.randn(2, 4, 3, 3))
