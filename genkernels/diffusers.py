"""diffusers modules on the fused ops (imports diffusers; ``genkernels.patch`` uses this module).

    from genkernels.diffusers import AttnProcessor
    unet.set_attn_processor(AttnProcessor())          # or: genkernels.patch(unet) for the whole model

- ``AttnProcessor``: same steps as diffusers' ``AttnProcessor2_0`` (spatial/group norm, projections, q/k
  norms, output projection, residual, rescale), with the attention itself done by the flash kernel in the
  token layout [B, L, H*d] (no head transposes). Calls with an ``attention_mask`` (arbitrary additive
  masks) are handed to the ``fallback`` processor (diffusers' ``AttnProcessor2_0`` by default).
- ``FusedResnetBlock2D``: diffusers' ``ResnetBlock2D.forward`` with each GroupNorm -> SiLU pair in one
  ``group_norm_silu`` call; with ``time_embedding_norm="scale_shift"`` the time embedding's scale and shift
  are fused in too (``silu(norm2(h) * (1 + scale) + shift)``).
- ``FusedVectorQuantizer``: diffusers' ``VectorQuantizer.forward`` with the nearest code from
  ``vq_nearest`` instead of ``argmin(cdist(...))`` (no M x K distance matrix).

The two ``Fused*`` classes subclass diffusers' own and add no parameters: ``genkernels.patch`` swaps an
instance's class in place (weights, state_dict keys and hooks untouched) after checking that it
computes the same function, and ``genkernels.unpatch`` swaps it back.
"""
from __future__ import annotations

import torch
from diffusers.models.autoencoders.vae import VectorQuantizer
from diffusers.models.resnet import ResnetBlock2D

from .ops.attention import attention
from .ops.group_norm_silu import group_norm_silu
from .ops.vq_nearest import vq_nearest


class AttnProcessor:
    """diffusers attention processor backed by genkernels.attention (cpu / triton / cuda).

    fallback: the processor that takes calls with an ``attention_mask`` (default: a diffusers
    ``AttnProcessor2_0``); ``genkernels.patch`` passes the processor it replaces."""

    def __init__(self, fallback=None):
        self._fallback = fallback

    @property
    def fallback(self):
        if self._fallback is None:
            from diffusers.models.attention_processor import AttnProcessor2_0
            self._fallback = AttnProcessor2_0()
        return self._fallback

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        if attention_mask is not None:
            return self.fallback(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        residual = hidden_states
        if getattr(attn, "spatial_norm", None) is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        if getattr(attn, "group_norm", None) is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif getattr(attn, "norm_cross", None):
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        heads = attn.heads
        B = query.shape[0]
        d = key.shape[-1] // heads
        if getattr(attn, "norm_q", None) is not None or getattr(attn, "norm_k", None) is not None:
            q4 = query.view(B, -1, heads, d).transpose(1, 2)
            k4 = key.view(B, -1, heads, d).transpose(1, 2)
            if attn.norm_q is not None:
                q4 = attn.norm_q(q4)
            if attn.norm_k is not None:
                k4 = attn.norm_k(k4)
            query = q4.transpose(1, 2).reshape(B, -1, heads * d)
            key = k4.transpose(1, 2).reshape(B, -1, heads * d)
        scale = getattr(attn, "scale", None)
        hidden_states = attention(query, key, value, scale=scale, heads=heads).to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
        if getattr(attn, "residual_connection", False):
            hidden_states = hidden_states + residual
        factor = getattr(attn, "rescale_output_factor", 1.0)
        return hidden_states if factor == 1 else hidden_states / factor   # x / 1 is x


def _gn_silu(norm: torch.nn.GroupNorm, x: torch.Tensor, scale=None, shift=None) -> torch.Tensor:
    return group_norm_silu(x, norm.num_groups, norm.weight, norm.bias, norm.eps, scale=scale, shift=shift)


class FusedResnetBlock2D(ResnetBlock2D):
    """``ResnetBlock2D`` whose GroupNorm -> SiLU pairs run as ``group_norm_silu`` (the time embedding's
    scale/shift fused in for ``time_embedding_norm="scale_shift"``). Valid only where norm1/norm2 are
    plain ``nn.GroupNorm`` and ``nonlinearity`` is ``nn.SiLU`` (``genkernels.patch`` checks)."""

    def forward(self, input_tensor: torch.Tensor, temb: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if args or kwargs.get("scale", None) is not None:
            return super().forward(input_tensor, temb, *args, **kwargs)  # diffusers' deprecation path
        hidden_states = _gn_silu(self.norm1, input_tensor)
        if self.upsample is not None:
            if hidden_states.shape[0] >= 64:  # as diffusers (upsample_nearest_nhwc and large batches)
                input_tensor = input_tensor.contiguous()
                hidden_states = hidden_states.contiguous()
            input_tensor = self.upsample(input_tensor)
            hidden_states = self.upsample(hidden_states)
        elif self.downsample is not None:
            input_tensor = self.downsample(input_tensor)
            hidden_states = self.downsample(hidden_states)
        hidden_states = self.conv1(hidden_states)

        if self.time_embedding_norm == "scale_shift":
            if temb is None:
                raise ValueError(f" `temb` should not be None when `time_embedding_norm` is {self.time_embedding_norm}")
            if not self.skip_time_act:
                temb = self.nonlinearity(temb)
            time_scale, time_shift = self.time_emb_proj(temb).chunk(2, dim=1)  # [N, C] each
            hidden_states = _gn_silu(self.norm2, hidden_states, time_scale, time_shift)
        else:
            if self.time_emb_proj is not None:
                if not self.skip_time_act:
                    temb = self.nonlinearity(temb)
                temb = self.time_emb_proj(temb)[:, :, None, None]
            if self.time_embedding_norm == "default" and temb is not None:  # other values: temb unused
                hidden_states = hidden_states + temb
            hidden_states = _gn_silu(self.norm2, hidden_states)

        hidden_states = self.dropout(hidden_states)
        hidden_states = self.conv2(hidden_states)
        if self.conv_shortcut is not None:
            if self.training:  # as diffusers: contiguous only in training (DDP gradient strides)
                input_tensor = input_tensor.contiguous()
            input_tensor = self.conv_shortcut(input_tensor)
        out = input_tensor + hidden_states
        return out if self.output_scale_factor == 1 else out / self.output_scale_factor   # x / 1 is x


class FusedVectorQuantizer(VectorQuantizer):
    """diffusers' ``VectorQuantizer`` with the nearest code from ``vq_nearest`` (same outputs, losses,
    straight-through gradient and index remapping)."""

    def forward(self, z: torch.Tensor):
        z = z.permute(0, 2, 3, 1).contiguous()
        z_flattened = z.view(-1, self.vq_embed_dim)
        w = self.embedding.weight
        min_encoding_indices, _ = vq_nearest(z_flattened.detach().to(w.dtype), w.detach())
        z_q = self.embedding(min_encoding_indices).view(z.shape)
        if not self.legacy:
            loss = self.beta * torch.mean((z_q.detach() - z) ** 2) + torch.mean((z_q - z.detach()) ** 2)
        else:
            loss = torch.mean((z_q.detach() - z) ** 2) + self.beta * torch.mean((z_q - z.detach()) ** 2)
        z_q = z + (z_q - z).detach()  # straight-through gradient
        z_q = z_q.permute(0, 3, 1, 2).contiguous()
        if self.remap is not None:
            min_encoding_indices = self.remap_to_used(min_encoding_indices.reshape(z.shape[0], -1)).reshape(-1, 1)
        if self.sane_index_shape:
            min_encoding_indices = min_encoding_indices.reshape(z_q.shape[0], z_q.shape[2], z_q.shape[3])
        return z_q, loss, (None, None, min_encoding_indices)
