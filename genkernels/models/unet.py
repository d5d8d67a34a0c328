"""The denoising UNet of DDPM / DDIM / CFG / latent diffusion / Stable Diffusion, with the architecture
and parameter names of diffusers' ``UNet2DConditionModel`` (so its state dicts load as they are).

    unet = UNet(UNetConfig(**SD15_UNET))                    # Stable Diffusion 1.5's UNet
    eps = unet(sample, timestep, encoder_hidden_states=text_embeddings)
    ours = load_diffusers_unet(diffusers_unet)              # or load_diffusers_unet(state_dict, config)

Structure (as diffusers): sinusoidal time embedding -> MLP (+ class embedding), conv_in, down blocks
(ResNet blocks, transformer blocks in the CrossAttn* variants, a strided conv between levels), a mid
block, up blocks consuming the skip connections, GroupNorm+SiLU, conv_out. The hot paths run on the
fused ops: every GroupNorm(+SiLU) of the ResNet blocks through ``group_norm_silu`` (with the time
embedding as AdaGN scale/shift when ``resnet_time_scale_shift="scale_shift"``), the transformer blocks'
self- and cross-attention through ``genkernels.attention`` in the token layout [B, L, heads*d].

Naming quirk kept from diffusers for weight compatibility: ``attention_head_dim`` of the UNet config is
the number of attention *heads* of each level (the head size is channels // heads).
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import Attention, GroupNormSiLU
from .blocks import Downsample2D, ResnetBlock2D, TimestepEmbedding, Timesteps, UNetMidBlock2D, Upsample2D
from ..ops._common import needs_grad, plain_eager
from .onednn import Linear, use_onednn

Tensor = torch.Tensor

DOWN_BLOCKS = ("DownBlock2D", "CrossAttnDownBlock2D")
UP_BLOCKS = ("UpBlock2D", "CrossAttnUpBlock2D")
MID_BLOCKS = ("UNetMidBlock2DCrossAttn", "UNetMidBlock2D", None)


@dataclass
class UNetConfig:
    """diffusers' UNet2DConditionModel config keys (the subset this UNet implements; defaults as there)."""
    sample_size: Optional[int] = None
    in_channels: int = 4
    out_channels: int = 4
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    down_block_types: Tuple[str, ...] = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                         "CrossAttnDownBlock2D", "DownBlock2D")
    mid_block_type: Optional[str] = "UNetMidBlock2DCrossAttn"
    up_block_types: Tuple[str, ...] = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                       "CrossAttnUpBlock2D")
    only_cross_attention: bool = False
    block_out_channels: Tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: Union[int, Tuple[int, ...]] = 2
    downsample_padding: int = 1
    mid_block_scale_factor: float = 1.0
    dropout: float = 0.0
    act_fn: str = "silu"
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    # None: the transformer blocks have self-attention only (no attn2), for unconditional / class models
    cross_attention_dim: Optional[int] = 1280
    transformer_layers_per_block: Union[int, Tuple[int, ...]] = 1
    attention_head_dim: Union[int, Tuple[int, ...]] = 8   # number of heads per level (diffusers' naming)
    use_linear_projection: bool = False
    num_class_embeds: Optional[int] = None
    upcast_attention: bool = False      # accepted; attention always accumulates in float32
    resnet_time_scale_shift: str = "default"

    def __post_init__(self):
        for f in ("down_block_types", "up_block_types", "block_out_channels"):
            setattr(self, f, tuple(getattr(self, f)))
        n = len(self.block_out_channels)
        if n == 0:
            raise ValueError("UNetConfig: `block_out_channels` must name at least one level")
        if len(self.down_block_types) != n or len(self.up_block_types) != n:
            raise ValueError(f"UNetConfig: `down_block_types` and `up_block_types` need one entry per level of "
                             f"`block_out_channels` ({n}), got {len(self.down_block_types)} and "
                             f"{len(self.up_block_types)}")
        for name, kinds, known in (("down_block_types", self.down_block_types, DOWN_BLOCKS),
                                   ("up_block_types", self.up_block_types, UP_BLOCKS)):
            bad = [k for k in kinds if k not in known]
            if bad:
                raise ValueError(f"UNetConfig: `{name}` entries must be in {known}, got {bad}")
        if self.mid_block_type not in MID_BLOCKS:
            raise ValueError(f"UNetConfig: `mid_block_type` must be one of {MID_BLOCKS}, got {self.mid_block_type!r}")
        if self.resnet_time_scale_shift not in ("default", "scale_shift"):
            raise ValueError("UNetConfig: `resnet_time_scale_shift` must be 'default' or 'scale_shift', "
                             f"got {self.resnet_time_scale_shift!r}")
        if self.act_fn not in ("silu", "swish"):
            raise ValueError(f"UNetConfig: `act_fn` must be 'silu' (the fused op's activation), got {self.act_fn!r}")
        for c in self.block_out_channels:
            if c % self.norm_num_groups:
                raise ValueError(f"UNetConfig: `norm_num_groups`={self.norm_num_groups} must divide every entry "
                                 f"of `block_out_channels` {self.block_out_channels}")

    def per_level(self, name: str) -> Tuple:
        v = getattr(self, name)
        v = tuple(v) if isinstance(v, (list, tuple)) else (v,) * len(self.block_out_channels)
        if len(v) != len(self.block_out_channels):
            raise ValueError(f"UNetConfig: `{name}` needs one entry per level ({len(self.block_out_channels)}), "
                             f"got {v}")
        return v

    # diffusers keys this UNet does not implement, with the value that means "feature off"
    _UNSUPPORTED = dict(center_input_sample=False, class_embed_type=None, addition_embed_type=None,
                        encoder_hid_dim=None, encoder_hid_dim_type=None, dual_cross_attention=False,
                        time_embedding_type="positional", time_embedding_dim=None, time_embedding_act_fn=None,
                        timestep_post_act=None, time_cond_proj_dim=None, conv_in_kernel=3, conv_out_kernel=3,
                        class_embeddings_concat=False, mid_block_only_cross_attention=None,
                        cross_attention_norm=None, num_attention_heads=None, attention_type="default",
                        resnet_skip_time_act=False, resnet_out_scale_factor=1.0,
                        reverse_transformer_layers_per_block=None, projection_class_embeddings_input_dim=None)

    @classmethod
    def from_diffusers(cls, config: Mapping[str, Any]) -> "UNetConfig":
        """From a diffusers UNet2DConditionModel config (its ``.config`` or config.json as a dict).
        A feature this UNet lacks (set to anything but its off value) is a ValueError."""
        config = dict(config)
        for k, off in cls._UNSUPPORTED.items():
            if k in config and config[k] != off and not (k == "mid_block_only_cross_attention" and not config[k]):
                raise ValueError(f"load_diffusers_unet: config key {k}={config[k]!r} is not supported "
                                 f"(only {off!r})")
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in config.items() if k in known}
        return cls(**kw)


# ------------------------------------------------------------------------------- transformer blocks
class GEGLU(nn.Module):
    """proj -> (hidden, gate); hidden * gelu(gate) (diffusers' GEGLU)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: Tensor) -> Tensor:
        h, gate = self.proj(x).chunk(2, dim=-1)
        return h * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU MLP with 4x hidden width; ``net`` indices as diffusers' (0 GEGLU, 1 dropout, 2 out)."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, dim * mult), nn.Dropout(dropout), nn.Linear(dim * mult, dim)])

    def forward(self, x: Tensor) -> Tensor:
        for m in self.net:
            x = m(x)
        return x


class BasicTransformerBlock(nn.Module):
    """Pre-LayerNorm transformer block on tokens [B, L, dim]: self-attention (attn1), cross-attention on
    the context (attn2, absent when cross_attention_dim is None), GEGLU feed-forward; residual each."""

    def __init__(self, dim: int, heads: int, head_dim: int, cross_attention_dim: Optional[int],
                 only_cross_attention: bool = False, dropout: float = 0.0):
        super().__init__()
        self.only_cross_attention = only_cross_attention
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, cross_attention_dim if only_cross_attention else None, heads, head_dim,
                               dropout=dropout)
        if cross_attention_dim is not None:
            self.norm2 = nn.LayerNorm(dim)
            self.attn2 = Attention(dim, cross_attention_dim, heads, head_dim, dropout=dropout)
        else:
            self.norm2 = self.attn2 = None
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, dropout=dropout)

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> Tensor:
        x = x + self.attn1(self.norm1(x), context if self.only_cross_attention else None)
        if self.attn2 is not None:
            x = x + self.attn2(self.norm2(x), context)   # context None: self-attention, as diffusers
        return x + self.ff(self.norm3(x))


class Transformer2DModel(nn.Module):
    """GroupNorm -> proj_in (1x1 conv, or linear on tokens with use_linear_projection) -> transformer
    blocks on the H*W tokens -> proj_out -> + input (diffusers' continuous-input Transformer2DModel)."""

    def __init__(self, heads: int, head_dim: int, in_channels: int, num_layers: int = 1,
                 cross_attention_dim: Optional[int] = None, norm_num_groups: int = 32,
                 use_linear_projection: bool = False, only_cross_attention: bool = False, dropout: float = 0.0):
        super().__init__()
        inner = heads * head_dim
        self.use_linear_projection = use_linear_projection
        self.norm = GroupNormSiLU(norm_num_groups, in_channels, eps=1e-6, act=None)
        proj = (lambda i, o: nn.Linear(i, o)) if use_linear_projection else (lambda i, o: nn.Conv2d(i, o, 1))
        self.proj_in = proj(in_channels, inner)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner, heads, head_dim, cross_attention_dim, only_cross_attention, dropout)
             for _ in range(num_layers)])
        self.proj_out = proj(inner, in_channels)

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> Tensor:
        B, _, H, W = x.shape
        h = self.norm(x)
        if not self.use_linear_projection:
            h = self.proj_in(h)
        h = h.permute(0, 2, 3, 1).reshape(B, H * W, h.shape[1])   # tokens [B, HW, C]
        if self.use_linear_projection:
            h = self.proj_in(h)
        for block in self.transformer_blocks:
            h = block(h, context)
        if self.use_linear_projection:
            h = self.proj_out(h)
        h = h.reshape(B, H, W, h.shape[-1]).permute(0, 3, 1, 2)
        if not self.use_linear_projection:
            h = self.proj_out(h)
        return h + x


# ------------------------------------------------------------------------------- down / mid / up
class _Level(nn.Module):
    """What the down and up blocks share: ResNet blocks, each optionally followed by a transformer."""

    def _build(self, in_chs: Sequence[int], out_ch: int, temb_ch: int, cfg: UNetConfig, heads: Optional[int],
               layers: int, cross_attention_dim: Optional[int]):
        self.resnets = nn.ModuleList([_resnet(i, out_ch, temb_ch, cfg) for i in in_chs])
        if heads is not None:   # the CrossAttn* variants
            self.attentions = nn.ModuleList([_transformer(out_ch, heads, layers, cross_attention_dim, cfg)
                                             for _ in in_chs])
        else:
            self.attentions = None

    def _layer(self, i: int, h: Tensor, temb: Tensor, context: Optional[Tensor]) -> Tensor:
        h = self.resnets[i](h, temb)
        if self.attentions is not None:
            h = self.attentions[i](h, context)
        return h


def _resnet(in_ch: int, out_ch: int, temb_ch: int, cfg: UNetConfig, scale: float = 1.0) -> ResnetBlock2D:
    return ResnetBlock2D(in_channels=in_ch, out_channels=out_ch, temb_channels=temb_ch, groups=cfg.norm_num_groups,
                         eps=cfg.norm_eps, dropout=cfg.dropout, time_embedding_norm=cfg.resnet_time_scale_shift,
                         output_scale_factor=scale)


def _transformer(ch: int, heads: int, layers: int, cross_attention_dim: Optional[int], cfg: UNetConfig):
    if ch % heads:
        raise ValueError(f"UNetConfig: {heads} attention heads (`attention_head_dim`) must divide {ch} channels")
    return Transformer2DModel(heads, ch // heads, ch, layers, cross_attention_dim, cfg.norm_num_groups,
                              cfg.use_linear_projection, cfg.only_cross_attention, cfg.dropout)


class DownBlock2D(_Level):
    """`layers` ResNet blocks (+ transformers in CrossAttnDownBlock2D), then a stride-2 conv unless last;
    returns (h, the skip tensors: each layer's output and the downsampled one)."""

    def __init__(self, in_ch: int, out_ch: int, temb_ch: int, cfg: UNetConfig, layers: int, add_downsample: bool,
                 heads: Optional[int] = None, transformer_layers: int = 1):
        super().__init__()
        self._build([in_ch] + [out_ch] * (layers - 1), out_ch, temb_ch, cfg, heads, transformer_layers,
                    cfg.cross_attention_dim)
        self.downsamplers = (nn.ModuleList([Downsample2D(out_ch, use_conv=True, out_channels=out_ch,
                                                         padding=cfg.downsample_padding)])
                             if add_downsample else None)

    def forward(self, h: Tensor, temb: Tensor, context: Optional[Tensor] = None):
        skips = []
        for i in range(len(self.resnets)):
            h = self._layer(i, h, temb, context)
            skips.append(h)
        if self.downsamplers is not None:
            h = self.downsamplers[0](h)
            skips.append(h)
        return h, skips


class CrossAttnDownBlock2D(DownBlock2D):
    pass


class UpBlock2D(_Level):
    """`layers` ResNet blocks on [h; skip] (channel concat, the skips taken last-first), + transformers
    in CrossAttnUpBlock2D, then nearest x2 upsampling + conv unless last."""

    def __init__(self, in_ch: int, prev_ch: int, out_ch: int, temb_ch: int, cfg: UNetConfig, layers: int,
                 add_upsample: bool, heads: Optional[int] = None, transformer_layers: int = 1):
        super().__init__()
        skip_chs = [out_ch] * (layers - 1) + [in_ch]
        ins = [(prev_ch if i == 0 else out_ch) + skip_chs[i] for i in range(layers)]
        self._build(ins, out_ch, temb_ch, cfg, heads, transformer_layers, cfg.cross_attention_dim)
        self.upsamplers = (nn.ModuleList([Upsample2D(out_ch, use_conv=True, out_channels=out_ch)])
                           if add_upsample else None)

    def forward(self, h: Tensor, skips: list, temb: Tensor, context: Optional[Tensor] = None,
                upsample_size=None) -> Tensor:
        for i in range(len(self.resnets)):
            h = self._layer(i, torch.cat([h, skips.pop()], dim=1), temb, context)
        if self.upsamplers is not None:
            h = self.upsamplers[0](h, upsample_size)
        return h


class CrossAttnUpBlock2D(UpBlock2D):
    pass


class UNetMidBlock2DCrossAttn(nn.Module):
    """resnet, transformer, resnet at the lowest resolution."""

    def __init__(self, ch: int, temb_ch: int, cfg: UNetConfig, heads: int, transformer_layers: int = 1):
        super().__init__()
        scale = cfg.mid_block_scale_factor
        self.resnets = nn.ModuleList([_resnet(ch, ch, temb_ch, cfg, scale), _resnet(ch, ch, temb_ch, cfg, scale)])
        self.attentions = nn.ModuleList([_transformer(ch, heads, transformer_layers, cfg.cross_attention_dim, cfg)])

    def forward(self, h: Tensor, temb: Tensor, context: Optional[Tensor] = None) -> Tensor:
        return self.resnets[1](self.attentions[0](self.resnets[0](h, temb), context), temb)


# ------------------------------------------------------------------------------- the UNet
class _ContextMemo:
    """A cross-attention key / value projection inside ``UNet.cached_context``: a call on the very tensor
    of the previous call (the same object, held here so that its memory is not reused, with the same
    version counter, so not modified in place since) and on the same weight returns the previous output
    (the same computation on the same values: bit-identical). Calls that autograd records, or a compiler
    traces, compute. Mixed in before the layer's own class (``_CONTEXT``), whose forward computes."""

    def forward(self, x: Tensor) -> Tensor:
        if not plain_eager(x):
            return super().forward(x)
        params = (self.weight, self.bias)
        versions = tuple(t._version for t in (x, *params) if t is not None)
        memo = self.__dict__.get("_memo")
        if memo is not None and memo[0] is x and all(a is b for a, b in zip(memo[1], params)) and memo[2] == versions:
            return memo[3]
        y = super().forward(x)
        if not needs_grad(x, *params):
            self.__dict__["_memo"] = (x, params, versions, y)
        return y


class _ContextProjection(_ContextMemo, nn.Linear):
    pass


class _ContextProjectionOneDNN(_ContextMemo, Linear):
    pass


_CONTEXT = {nn.Linear: _ContextProjection, Linear: _ContextProjectionOneDNN}   # layer class -> its memo class


class UNet(nn.Module):
    """diffusers' UNet2DConditionModel (the subset in UNetConfig). ``forward(sample, timestep,
    encoder_hidden_states=None, class_labels=None)`` -> the model output, shaped like ``sample``."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        if not isinstance(config, UNetConfig):
            raise TypeError(f"UNet: `config` must be a UNetConfig, got {type(config).__name__}")
        self.config = cfg = config
        chs = cfg.block_out_channels
        n = len(chs)
        heads, layers = cfg.per_level("attention_head_dim"), cfg.per_level("layers_per_block")
        tlayers = cfg.per_level("transformer_layers_per_block")
        temb_ch = chs[0] * 4
        self.conv_in = nn.Conv2d(cfg.in_channels, chs[0], 3, padding=1)
        self.time_proj = Timesteps(chs[0], cfg.flip_sin_to_cos, cfg.freq_shift)
        self.time_embedding = TimestepEmbedding(chs[0], temb_ch)
        self.class_embedding = nn.Embedding(cfg.num_class_embeds, temb_ch) if cfg.num_class_embeds else None

        self.down_blocks = nn.ModuleList()
        out_ch = chs[0]
        for i, kind in enumerate(cfg.down_block_types):
            in_ch, out_ch = out_ch, chs[i]
            attn = kind == "CrossAttnDownBlock2D"
            cls = CrossAttnDownBlock2D if attn else DownBlock2D
            self.down_blocks.append(cls(in_ch, out_ch, temb_ch, cfg, layers[i], add_downsample=i < n - 1,
                                        heads=heads[i] if attn else None, transformer_layers=tlayers[i]))
        if cfg.mid_block_type is None:
            self.mid_block = None
        elif cfg.mid_block_type == "UNetMidBlock2DCrossAttn":
            self.mid_block = UNetMidBlock2DCrossAttn(chs[-1], temb_ch, cfg, heads[-1], tlayers[-1])
        else:
            # UNet2DConditionModel builds its UNetMidBlock2D as a single ResNet block, without attention
            self.mid_block = UNetMidBlock2D(chs[-1], temb_ch, num_layers=0, groups=cfg.norm_num_groups,
                                            eps=cfg.norm_eps, dropout=cfg.dropout, add_attention=False,
                                            time_embedding_norm=cfg.resnet_time_scale_shift,
                                            output_scale_factor=cfg.mid_block_scale_factor)

        self.up_blocks = nn.ModuleList()
        rchs, rheads, rlayers, rtl = chs[::-1], heads[::-1], layers[::-1], tlayers[::-1]
        out_ch = rchs[0]
        for i, kind in enumerate(cfg.up_block_types):
            prev_ch, out_ch = out_ch, rchs[i]
            in_ch = rchs[min(i + 1, n - 1)]
            attn = kind == "CrossAttnUpBlock2D"
            cls = CrossAttnUpBlock2D if attn else UpBlock2D
            self.up_blocks.append(cls(in_ch, prev_ch, out_ch, temb_ch, cfg, rlayers[i] + 1, add_upsample=i < n - 1,
                                      heads=rheads[i] if attn else None, transformer_layers=rtl[i]))
        self.conv_norm_out = GroupNormSiLU(cfg.norm_num_groups, chs[0], eps=cfg.norm_eps)   # + conv_act fused
        self.conv_out = nn.Conv2d(chs[0], cfg.out_channels, 3, padding=1)
        use_onednn(self)   # inference: convolutions and wide linear layers on weights reordered once

    @contextlib.contextmanager
    def cached_context(self):
        """Within: every cross-attention projects the keys and values of an ``encoder_hidden_states`` tensor
        once and reuses them while the calls pass that same, unmodified tensor (a sampling loop passes the
        same text embeddings at every step). Outputs are bit-identical to uncached calls. Inference only
        (calls that autograd records always compute); for one whole sampling call, not for single steps."""
        attn2 = [m.attn2 for m in self.modules() if isinstance(m, BasicTransformerBlock) and m.attn2 is not None]
        swapped = [(p, type(p)) for a in attn2 for p in (a.to_k, a.to_v) if type(p) in _CONTEXT]
        for p, cls in swapped:
            p.__class__ = _CONTEXT[cls]
        try:
            yield self
        finally:
            for p, cls in swapped:
                p.__dict__.pop("_memo", None)
                p.__class__ = cls

    def time_embed(self, timestep, batch: int, dtype: torch.dtype, device: torch.device,
                   class_labels: Optional[Tensor] = None) -> Tensor:
        """The embedding [batch, 4 * block_out_channels[0]] the ResNet blocks are conditioned on."""
        if not torch.is_tensor(timestep):
            timestep = torch.tensor([timestep], dtype=torch.float64 if isinstance(timestep, float) else torch.long)
        t = timestep.to(device).reshape(-1).expand(batch) if timestep.numel() == 1 else timestep.to(device)
        if t.shape != (batch,):
            raise ValueError(f"UNet: `timestep` must be a scalar or have one entry per sample ({batch}), "
                             f"got shape {tuple(timestep.shape)}")
        emb = self.time_embedding(self.time_proj(t).to(dtype))
        if self.class_embedding is not None:
            if class_labels is None:
                raise ValueError("UNet: `class_labels` are required (the config has num_class_embeds)")
            emb = emb + self.class_embedding(class_labels.to(device)).to(dtype)
        return emb

    def forward(self, sample: Tensor, timestep, encoder_hidden_states: Optional[Tensor] = None,
                class_labels: Optional[Tensor] = None) -> Tensor:
        if sample.dim() != 4 or sample.shape[1] != self.config.in_channels:
            raise ValueError(f"UNet: `sample` must be [N, {self.config.in_channels}, H, W], "
                             f"got shape {tuple(sample.shape)}")
        if self.config.cross_attention_dim is not None and encoder_hidden_states is not None and (
                encoder_hidden_states.dim() != 3 or encoder_hidden_states.shape[0] != sample.shape[0]
                or encoder_hidden_states.shape[2] != self.config.cross_attention_dim):
            raise ValueError(f"UNet: `encoder_hidden_states` must be [{sample.shape[0]}, L, "
                             f"{self.config.cross_attention_dim}], got shape {tuple(encoder_hidden_states.shape)}")
        temb = self.time_embed(timestep, sample.shape[0], sample.dtype, sample.device, class_labels)
        ctx = encoder_hidden_states
        # sizes not divisible by 2^levels: each upsampler is told the size of the skip it meets
        factor = 2 ** (len(self.up_blocks) - 1)
        odd = any(s % factor for s in sample.shape[-2:])

        h = self.conv_in(sample)
        skips = [h]
        for block in self.down_blocks:
            h, s = block(h, temb, ctx)
            skips.extend(s)
        if isinstance(self.mid_block, UNetMidBlock2DCrossAttn):
            h = self.mid_block(h, temb, ctx)
        elif self.mid_block is not None:
            h = self.mid_block(h, temb)
        for i, block in enumerate(self.up_blocks):
            n = len(block.resnets)
            level_skips, skips = skips[-n:], skips[:-n]
            size = skips[-1].shape[2:] if odd and i < len(self.up_blocks) - 1 else None
            h = block(h, level_skips, temb, ctx, size)
        # NCHW out whatever layout the convolutions computed in (models/onednn.py: channels_last)
        return self.conv_out(self.conv_norm_out(h)).contiguous()


# ------------------------------------------------------------------------------- presets and loading
# Stable Diffusion 1.5's UNet (runwayml/stable-diffusion-v1-5 unet/config.json)
SD15_UNET: Dict[str, Any] = dict(
    sample_size=64, in_channels=4, out_channels=4, flip_sin_to_cos=True, freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, downsample_padding=1,
    mid_block_scale_factor=1.0, act_fn="silu", norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=768,
    attention_head_dim=8, use_linear_projection=False)


def load_diffusers_unet(m, config: Optional[Mapping[str, Any]] = None) -> UNet:
    """Our UNet with the weights of a diffusers ``UNet2DConditionModel`` (an instance, or its
    ``state_dict()`` plus its config as a dict). Dtype and device follow the weights; eval mode."""
    if isinstance(m, Mapping) and not hasattr(m, "config"):
        if config is None:
            raise ValueError("load_diffusers_unet: a state_dict needs its `config` (the diffusers config dict)")
        state = m
    elif hasattr(m, "config") and hasattr(m, "state_dict"):
        state, config = m.state_dict(), (config if config is not None else m.config)
    else:
        raise TypeError(f"load_diffusers_unet: expected a diffusers UNet2DConditionModel or a state_dict, "
                        f"got {type(m).__name__}")
    unet = UNet(UNetConfig.from_diffusers(config))
    first = next(iter(state.values()))
    unet.to(device=first.device, dtype=first.dtype)
    unet.load_state_dict(state, strict=True)
    return unet.eval()


__all__ = ["UNet", "UNetConfig", "SD15_UNET", "load_diffusers_unet", "Transformer2DModel", "BasicTransformerBlock"]
