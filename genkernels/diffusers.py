"""A diffusers attention processor that runs any diffusers ``Attention`` through genkernels.attention.

    from genkernels.diffusers import AttnProcessor
    unet.set_attn_processor(AttnProcessor())

Same steps as diffusers' ``AttnProcessor2_0`` (spatial/group norm, projections, q/k norms, output
projection, residual, rescale), with the attention itself done by the flash kernel in the token layout
[B, L, H*d] (no head transposes). Calls with an ``attention_mask`` (arbitrary additive masks) are handed
to diffusers' own ``AttnProcessor2_0``. diffusers is imported lazily, only for that fallback.
"""
from __future__ import annotations

import torch

from .ops.attention import attention


class AttnProcessor:
    """diffusers attention processor backed by genkernels.attention (cpu / triton / cuda)."""

    def __init__(self):
        self._fallback = None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        if attention_mask is not None:
            if self._fallback is None:
                from diffusers.models.attention_processor import AttnProcessor2_0
                self._fallback = AttnProcessor2_0()
            return self._fallback(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
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
        return hidden_states / getattr(attn, "rescale_output_factor", 1.0)
