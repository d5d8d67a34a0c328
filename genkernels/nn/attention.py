"""Attention modules on genkernels.attention, with diffusers' parameter names (to_q, to_k, to_v,
to_out.0) so a diffusers ``Attention``'s state dict loads as is."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..ops.attention import attention


class Attention(nn.Module):
    """Multi-head self-attention (encoder_hidden_states=None) or cross-attention.

    query_dim: channels of hidden_states; cross_attention_dim: channels of encoder_hidden_states
    (default query_dim); heads x dim_head = inner dim. Inputs [B, L, C] (or [B, C, H, W], returned in
    the same shape). key_padding_mask: bool [B, Lk], True = ignore that key.
    """

    def __init__(self, query_dim: int, cross_attention_dim: Optional[int] = None, heads: int = 8,
                 dim_head: int = 64, bias: bool = False, out_bias: bool = True, dropout: float = 0.0):
        super().__init__()
        inner = heads * dim_head
        kv_dim = cross_attention_dim or query_dim
        self.heads, self.dim_head, self.scale = heads, dim_head, dim_head ** -0.5
        self.is_cross_attention = cross_attention_dim is not None
        self.to_q = nn.Linear(query_dim, inner, bias=bias)
        self.to_k = nn.Linear(kv_dim, inner, bias=bias)
        self.to_v = nn.Linear(kv_dim, inner, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim, bias=out_bias), nn.Dropout(dropout)])

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: Optional[torch.Tensor] = None,
                key_padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = hidden_states
        spatial = x.dim() == 4
        if spatial:
            B, C, Hh, W = x.shape
            x = x.reshape(B, C, Hh * W).transpose(1, 2)
        ctx = x if encoder_hidden_states is None else encoder_hidden_states
        out = attention(self.to_q(x), self.to_k(ctx), self.to_v(ctx), scale=self.scale,
                        key_padding_mask=key_padding_mask, heads=self.heads)
        out = self.to_out[1](self.to_out[0](out))
        if spatial:
            out = out.transpose(1, 2).reshape(B, C, Hh, W)
        return out


class CrossAttention(Attention):
    """Attention whose keys/values come from a context of `cross_attention_dim` channels."""

    def __init__(self, query_dim: int, cross_attention_dim: int, heads: int = 8, dim_head: int = 64, **kw):
        super().__init__(query_dim, cross_attention_dim, heads, dim_head, **kw)
