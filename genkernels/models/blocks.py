"""Building blocks shared by the models, with diffusers' parameter names so its state dicts load as is.

    ResnetBlock2D(in_channels, out_channels, temb_channels=None, groups=32)     # norm1, conv1, time_emb_proj, ...
    SpatialSelfAttention(channels, dim_head=channels, groups=32)                # group_norm, to_q/k/v, to_out.0
    Downsample2D(channels, use_conv=True), Upsample2D(channels, use_conv=True)  # .conv
    Timesteps(dim, flip_sin_to_cos, downscale_freq_shift), TimestepEmbedding(dim, time_embed_dim)
    Encoder / Decoder                      # the encoder and decoder of diffusers' AutoencoderKL / VQModel

Every GroupNorm (+ SiLU) goes through the fused ``genkernels.group_norm_silu`` (as a ``GroupNormSiLU``,
whose parameters are a GroupNorm's ``weight`` / ``bias``), every attention through ``genkernels.attention``.
The counterparts in diffusers: ``models.resnet.ResnetBlock2D``, ``models.attention_processor.Attention``
(as built by ``UNetMidBlock2D``: group_norm, residual, rescale_output_factor), ``models.downsampling``,
``models.upsampling``, ``models.embeddings``, ``models.unets.unet_2d_blocks`` (DownEncoderBlock2D,
UpDecoderBlock2D, UNetMidBlock2D) and ``models.autoencoders.vae`` (Encoder, Decoder).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import Attention, GroupNormSiLU
from .onednn import use_onednn

Tensor = torch.Tensor


# ----------------------------------------------------------------------------------------- ResNet
class ResnetBlock2D(nn.Module):
    """Pre-norm residual block: x + conv2(drop(act(norm2(conv1(act(norm1(x))) [+ temb])))).

    temb_channels: width of the time (or class) embedding, None for none. time_embedding_norm:
    "default" adds the projected embedding before norm2; "scale_shift" applies it as AdaGN,
    ``norm2(h) * (1 + scale) + shift`` (fused into the same group_norm_silu call). up / down resample
    both paths by nearest x2 / average pooling before conv1 (diffusers' ``up=True`` / ``down=True``).
    """

    def __init__(self, in_channels: int, out_channels: Optional[int] = None, *, temb_channels: Optional[int] = None,
                 groups: int = 32, groups_out: Optional[int] = None, eps: float = 1e-6, dropout: float = 0.0,
                 time_embedding_norm: str = "default", skip_time_act: bool = False, output_scale_factor: float = 1.0,
                 use_in_shortcut: Optional[bool] = None, conv_shortcut_bias: bool = True,
                 up: bool = False, down: bool = False):
        super().__init__()
        if time_embedding_norm not in ("default", "scale_shift"):
            raise ValueError(f"ResnetBlock2D: `time_embedding_norm` must be 'default' or 'scale_shift', "
                             f"got {time_embedding_norm!r}")
        if up and down:
            raise ValueError("ResnetBlock2D: `up` and `down` are exclusive")
        out_channels = in_channels if out_channels is None else out_channels
        self.in_channels, self.out_channels = in_channels, out_channels
        self.time_embedding_norm, self.skip_time_act = time_embedding_norm, skip_time_act
        self.output_scale_factor, self.up, self.down = output_scale_factor, up, down
        self.norm1 = GroupNormSiLU(groups, in_channels, eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_emb_proj = None
        if temb_channels is not None:
            width = 2 * out_channels if time_embedding_norm == "scale_shift" else out_channels
            self.time_emb_proj = nn.Linear(temb_channels, width)
        self.norm2 = GroupNormSiLU(groups if groups_out is None else groups_out, out_channels, eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if use_in_shortcut is None:
            use_in_shortcut = in_channels != out_channels
        self.conv_shortcut = (nn.Conv2d(in_channels, out_channels, 1, bias=conv_shortcut_bias)
                              if use_in_shortcut else None)

    def _resample(self, x: Tensor) -> Tensor:
        if self.up:
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        if self.down:
            return F.avg_pool2d(x, 2, 2)
        return x

    def forward(self, x: Tensor, temb: Optional[Tensor] = None) -> Tensor:
        h = self.conv1(self._resample(self.norm1(x)))
        x = self._resample(x)
        scale = shift = None
        if self.time_emb_proj is not None:
            if temb is None:
                raise ValueError("ResnetBlock2D: `temb` is required (the block has a time_emb_proj)")
            t = self.time_emb_proj(temb if self.skip_time_act else F.silu(temb))
            if self.time_embedding_norm == "scale_shift":
                scale, shift = t.chunk(2, dim=1)
            else:
                h = h + t[:, :, None, None]
        h = self.conv2(self.dropout(self.norm2(h, scale=scale, shift=shift)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        out = x + h
        return out if self.output_scale_factor == 1 else out / self.output_scale_factor


# ----------------------------------------------------------------------------------------- attention
class SpatialSelfAttention(Attention):
    """Self-attention over the pixels of a feature map with a GroupNorm in front and a residual:
    ``(x + to_out(attention(group_norm(x)))) / rescale_output_factor`` — diffusers' ``Attention`` as the
    VAE / UNet mid-block builds it (``norm_num_groups``, ``residual_connection=True``, ``bias=True``)."""

    def __init__(self, channels: int, dim_head: Optional[int] = None, *, groups: Optional[int] = 32,
                 eps: float = 1e-6, rescale_output_factor: float = 1.0, bias: bool = True, dropout: float = 0.0):
        dim_head = channels if dim_head is None else dim_head
        if dim_head < 1 or channels % dim_head:
            raise ValueError(f"SpatialSelfAttention: `dim_head`={dim_head} must divide `channels`={channels}")
        super().__init__(channels, heads=channels // dim_head, dim_head=dim_head, bias=bias, dropout=dropout)
        # groups=None: no norm (diffusers' mid-block attention with a scale-shift time embedding)
        self.group_norm = GroupNormSiLU(groups, channels, eps, act=None) if groups is not None else None
        self.rescale_output_factor = rescale_output_factor

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"SpatialSelfAttention: `x` must be [N, C, H, W], got shape {tuple(x.shape)}")
        h = self.group_norm(x) if self.group_norm is not None else x
        out = super().forward(h) + x
        return out if self.rescale_output_factor == 1 else out / self.rescale_output_factor


# ----------------------------------------------------------------------------------------- resampling
class Downsample2D(nn.Module):
    """Halve H and W: a stride-2 conv (``use_conv``; padding=0 pads right/bottom by one first, as the VAE
    encoder does) or 2x2 average pooling."""

    def __init__(self, channels: int, use_conv: bool = False, out_channels: Optional[int] = None,
                 padding: int = 1, kernel_size: int = 3, bias: bool = True):
        super().__init__()
        self.channels, self.out_channels = channels, out_channels or channels
        self.use_conv, self.padding = use_conv, padding
        if not use_conv and self.out_channels != channels:
            raise ValueError("Downsample2D: without a conv, `out_channels` must equal `channels`")
        self.conv = (nn.Conv2d(channels, self.out_channels, kernel_size, stride=2, padding=padding, bias=bias)
                     if use_conv else nn.AvgPool2d(2, 2))

    def forward(self, x: Tensor) -> Tensor:
        if self.use_conv and self.padding == 0:
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x)


class Upsample2D(nn.Module):
    """Double H and W: nearest interpolation (to ``output_size`` when given) then an optional 3x3 conv,
    or a transposed conv (``use_conv_transpose``)."""

    def __init__(self, channels: int, use_conv: bool = False, use_conv_transpose: bool = False,
                 out_channels: Optional[int] = None, kernel_size: Optional[int] = None, padding: int = 1,
                 bias: bool = True, interpolate: bool = True):
        super().__init__()
        self.channels, self.out_channels = channels, out_channels or channels
        self.use_conv, self.use_conv_transpose, self.interpolate = use_conv, use_conv_transpose, interpolate
        self.conv = None
        if use_conv_transpose:
            self.conv = nn.ConvTranspose2d(channels, self.out_channels, kernel_size or 4, stride=2,
                                           padding=padding, bias=bias)
        elif use_conv:
            self.conv = nn.Conv2d(channels, self.out_channels, kernel_size or 3, padding=padding, bias=bias)

    def forward(self, x: Tensor, output_size: Optional[Tuple[int, int]] = None) -> Tensor:
        if self.use_conv_transpose:
            return self.conv(x)
        if self.interpolate:
            x = (F.interpolate(x, scale_factor=2.0, mode="nearest") if output_size is None
                 else F.interpolate(x, size=output_size, mode="nearest"))
        return self.conv(x) if self.conv is not None else x


# ----------------------------------------------------------------------------------------- embeddings
def timestep_embedding(timesteps: Tensor, dim: int, flip_sin_to_cos: bool = False,
                       downscale_freq_shift: float = 1.0, scale: float = 1.0, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding [N, dim] of (possibly fractional) timesteps [N] (DDPM / Transformer):
    frequencies ``max_period ** (-i / (dim/2 - downscale_freq_shift))``, [sin, cos] or [cos, sin] halves,
    a zero column appended for odd dim."""
    if timesteps.dim() != 1:
        raise ValueError(f"timestep_embedding: `timesteps` must be 1-D, got shape {tuple(timesteps.shape)}")
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device)
    freqs = torch.exp(exponent / (half - downscale_freq_shift))
    args = scale * (timesteps[:, None].float() * freqs[None, :])
    emb = torch.cat([args.cos(), args.sin()] if flip_sin_to_cos else [args.sin(), args.cos()], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class Timesteps(nn.Module):
    """``timestep_embedding`` as a module (no parameters)."""

    def __init__(self, num_channels: int, flip_sin_to_cos: bool = True, downscale_freq_shift: float = 0.0,
                 scale: float = 1.0):
        super().__init__()
        self.num_channels, self.flip_sin_to_cos = num_channels, flip_sin_to_cos
        self.downscale_freq_shift, self.scale = downscale_freq_shift, scale

    def forward(self, timesteps: Tensor) -> Tensor:
        return timestep_embedding(timesteps, self.num_channels, self.flip_sin_to_cos, self.downscale_freq_shift,
                                  self.scale)


_ACTIVATIONS = {"silu": nn.SiLU, "swish": nn.SiLU, "gelu": nn.GELU, "mish": nn.Mish, "relu": nn.ReLU}


def _activation(name: Optional[str]) -> Optional[nn.Module]:
    if name is None:
        return None
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


class TimestepEmbedding(nn.Module):
    """MLP on a (sinusoidal) embedding: linear_2(act(linear_1(x [+ cond_proj(condition)]))) [-> post_act]."""

    def __init__(self, in_channels: int, time_embed_dim: int, act_fn: Optional[str] = "silu",
                 out_dim: Optional[int] = None, post_act_fn: Optional[str] = None,
                 cond_proj_dim: Optional[int] = None, sample_proj_bias: bool = True):
        super().__init__()
        self.linear_1 = nn.Linear(in_channels, time_embed_dim, sample_proj_bias)
        self.cond_proj = nn.Linear(cond_proj_dim, in_channels, bias=False) if cond_proj_dim is not None else None
        self.act = _activation(act_fn)
        self.linear_2 = nn.Linear(time_embed_dim, out_dim or time_embed_dim, sample_proj_bias)
        self.post_act = _activation(post_act_fn)

    def forward(self, sample: Tensor, condition: Optional[Tensor] = None) -> Tensor:
        if condition is not None:
            sample = sample + self.cond_proj(condition)
        sample = self.linear_1(sample)
        if self.act is not None:
            sample = self.act(sample)
        sample = self.linear_2(sample)
        return self.post_act(sample) if self.post_act is not None else sample


# ----------------------------------------------------------------------------------------- VAE encoder / decoder
class UNetMidBlock2D(nn.Module):
    """resnet, then (attention, resnet) x num_layers at constant width (the VAE's and the UNet's middle).
    attn_groups: the attention's GroupNorm groups; default `groups` with time_embedding_norm "default" and
    no norm otherwise (as diffusers)."""

    def __init__(self, channels: int, temb_channels: Optional[int] = None, *, num_layers: int = 1,
                 groups: int = 32, eps: float = 1e-6, dropout: float = 0.0, add_attention: bool = True,
                 attention_head_dim: Optional[int] = None, time_embedding_norm: str = "default",
                 output_scale_factor: float = 1.0, attn_groups: Optional[int] = None):
        super().__init__()
        res = dict(temb_channels=temb_channels, groups=groups, eps=eps, dropout=dropout,
                   time_embedding_norm=time_embedding_norm, output_scale_factor=output_scale_factor)
        self.resnets = nn.ModuleList([ResnetBlock2D(channels, channels, **res) for _ in range(num_layers + 1)])
        if attn_groups is None and time_embedding_norm == "default":
            attn_groups = groups
        self.attentions = nn.ModuleList([
            SpatialSelfAttention(channels, attention_head_dim or channels, groups=attn_groups, eps=eps,
                                 rescale_output_factor=output_scale_factor)
            for _ in range(num_layers)]) if add_attention else None

    def forward(self, x: Tensor, temb: Optional[Tensor] = None) -> Tensor:
        x = self.resnets[0](x, temb)
        for i, resnet in enumerate(self.resnets[1:]):
            if self.attentions is not None:
                x = self.attentions[i](x)
            x = resnet(x, temb)
        return x


def _resnet_chain(in_channels: int, out_channels: int, num_layers: int, groups: int, eps: float) -> nn.ModuleList:
    """num_layers ResNet blocks without time embedding, the first from in_channels to out_channels."""
    return nn.ModuleList([ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, groups=groups, eps=eps)
                          for i in range(num_layers)])


class DownEncoderBlock2D(nn.Module):
    """num_layers ResNet blocks, then a stride-2 conv (padding 0, right/bottom pad) unless last."""

    def __init__(self, in_channels: int, out_channels: int, num_layers: int, *, groups: int = 32,
                 eps: float = 1e-6, add_downsample: bool = True, downsample_padding: int = 0):
        super().__init__()
        self.resnets = _resnet_chain(in_channels, out_channels, num_layers, groups, eps)
        self.downsamplers = nn.ModuleList([Downsample2D(out_channels, use_conv=True, padding=downsample_padding)
                                           ]) if add_downsample else None

    def forward(self, x: Tensor) -> Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
        return x


class UpDecoderBlock2D(nn.Module):
    """num_layers ResNet blocks, then nearest x2 + 3x3 conv unless last."""

    def __init__(self, in_channels: int, out_channels: int, num_layers: int, *, groups: int = 32,
                 eps: float = 1e-6, add_upsample: bool = True):
        super().__init__()
        self.resnets = _resnet_chain(in_channels, out_channels, num_layers, groups, eps)
        self.upsamplers = nn.ModuleList([Upsample2D(out_channels, use_conv=True)]) if add_upsample else None

    def forward(self, x: Tensor) -> Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class Encoder(nn.Module):
    """diffusers' VAE encoder: conv_in -> down blocks (each halves H, W but the last) -> mid block
    (ResNet, attention, ResNet) -> GroupNorm+SiLU -> conv_out to out_channels (x2 with double_z: mean
    and log-variance)."""

    def __init__(self, in_channels: int, out_channels: int, block_out_channels: Sequence[int],
                 layers_per_block: int = 2, norm_num_groups: int = 32, double_z: bool = True,
                 mid_block_add_attention: bool = True):
        super().__init__()
        chans = list(block_out_channels)
        self.conv_in = nn.Conv2d(in_channels, chans[0], 3, padding=1)
        self.down_blocks = nn.ModuleList([
            DownEncoderBlock2D(chans[max(i - 1, 0)], c, layers_per_block, groups=norm_num_groups,
                               add_downsample=i < len(chans) - 1)
            for i, c in enumerate(chans)])
        self.mid_block = UNetMidBlock2D(chans[-1], groups=norm_num_groups, add_attention=mid_block_add_attention)
        self.conv_norm_out = GroupNormSiLU(norm_num_groups, chans[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(chans[-1], 2 * out_channels if double_z else out_channels, 3, padding=1)
        use_onednn(self)   # inference: convolutions and wide linear layers on weights reordered once

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        # NCHW out whatever layout the convolutions computed in (onednn.py: channels_last)
        return self.conv_out(self.conv_norm_out(self.mid_block(x))).contiguous()


class Decoder(nn.Module):
    """diffusers' VAE decoder: conv_in -> mid block -> up blocks of layers_per_block + 1 ResNets (each
    doubles H, W but the last) -> GroupNorm+SiLU -> conv_out."""

    def __init__(self, in_channels: int, out_channels: int, block_out_channels: Sequence[int],
                 layers_per_block: int = 2, norm_num_groups: int = 32, mid_block_add_attention: bool = True):
        super().__init__()
        chans = list(reversed(block_out_channels))
        self.conv_in = nn.Conv2d(in_channels, chans[0], 3, padding=1)
        self.mid_block = UNetMidBlock2D(chans[0], groups=norm_num_groups, add_attention=mid_block_add_attention)
        self.up_blocks = nn.ModuleList([
            UpDecoderBlock2D(chans[max(i - 1, 0)], c, layers_per_block + 1, groups=norm_num_groups,
                             add_upsample=i < len(chans) - 1)
            for i, c in enumerate(chans)])
        self.conv_norm_out = GroupNormSiLU(norm_num_groups, chans[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(chans[-1], out_channels, 3, padding=1)
        use_onednn(self)   # as the Encoder

    def forward(self, z: Tensor) -> Tensor:
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(self.conv_norm_out(x)).contiguous()
