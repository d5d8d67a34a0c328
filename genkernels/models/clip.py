"""CLIP text encoder (Radford et al., 2021) with the architecture and parameter names of transformers'
``CLIPTextModel``, its causal self-attention through the fused ``genkernels.attention(is_causal=True)``.

    enc = CLIPTextEncoder(CLIPTextConfig(**CLIP_PRESETS["sd15"]))   # Stable Diffusion 1.5's text encoder
    enc = load_clip_text_encoder(transformers_clip_text_model)      # real weights, same outputs
    hidden = enc(input_ids).last_hidden_state                        # [B, L, hidden_size]

Pre-LN transformer: token + learned position embeddings, per layer x += attn(ln1(x)) (causal), x +=
mlp(ln2(x)) (fc1, quick_gelu or gelu, fc2), then final_layer_norm. Stable Diffusion conditions its UNet
on ``last_hidden_state``. Tokenizers that work offline: genkernels/models/tokenizer.py.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Mapping, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

import genkernels

Tensor = torch.Tensor


@dataclass
class CLIPTextConfig:
    """transformers' CLIPTextConfig fields that shape the network (same names)."""
    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    eos_token_id: int = 2

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                             f"({self.num_attention_heads})")
        if self.hidden_act not in _ACTS:
            raise ValueError(f"hidden_act must be one of {sorted(_ACTS)}, got {self.hidden_act!r}")

    @classmethod
    def from_transformers(cls, config: Any) -> "CLIPTextConfig":
        """From a transformers CLIPTextConfig (or a dict of its fields); other fields are ignored."""
        get = config.get if isinstance(config, Mapping) else lambda k, d: getattr(config, k, d)
        return cls(**{f.name: get(f.name, f.default) for f in dataclasses.fields(cls)})


CLIP_PRESETS: Dict[str, Dict[str, Any]] = {
    # openai/clip-vit-large-patch14's text tower, as shipped in SD 1.5's text_encoder/
    "sd15": dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                 num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu"),
}


def quick_gelu(x: Tensor) -> Tensor:
    """CLIP's GELU approximation, x * sigmoid(1.702 x) (its weights were trained with it)."""
    return x * torch.sigmoid(1.702 * x)


_ACTS = {"quick_gelu": quick_gelu, "gelu": F.gelu}


class CLIPTextEmbeddings(nn.Module):
    def __init__(self, c: CLIPTextConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position_embedding = nn.Embedding(c.max_position_embeddings, c.hidden_size)

    def forward(self, input_ids: Tensor) -> Tensor:
        L = input_ids.shape[1]
        return self.token_embedding(input_ids) + self.position_embedding.weight[:L]


class CLIPAttention(nn.Module):
    def __init__(self, c: CLIPTextConfig):
        super().__init__()
        d = c.hidden_size
        self.heads = c.num_attention_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x: Tensor, key_padding_mask: Optional[Tensor] = None) -> Tensor:
        # token layout [B, L, H*d] straight into the kernel; scale 1/sqrt(head_dim) as CLIP's
        out = genkernels.attention(self.q_proj(x), self.k_proj(x), self.v_proj(x), heads=self.heads,
                                   key_padding_mask=key_padding_mask, is_causal=True)
        return self.out_proj(out)


class CLIPMLP(nn.Module):
    def __init__(self, c: CLIPTextConfig):
        super().__init__()
        self.act = _ACTS[c.hidden_act]
        self.fc1 = nn.Linear(c.hidden_size, c.intermediate_size)
        self.fc2 = nn.Linear(c.intermediate_size, c.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    def __init__(self, c: CLIPTextConfig):
        super().__init__()
        self.self_attn = CLIPAttention(c)
        self.layer_norm1 = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.mlp = CLIPMLP(c)
        self.layer_norm2 = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, x: Tensor, key_padding_mask: Optional[Tensor] = None) -> Tensor:
        x = x + self.self_attn(self.layer_norm1(x), key_padding_mask)
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nn.Module):
    def __init__(self, c: CLIPTextConfig):
        super().__init__()
        self.layers = nn.ModuleList(CLIPEncoderLayer(c) for _ in range(c.num_hidden_layers))


class CLIPTextOutput(NamedTuple):
    last_hidden_state: Tensor   # [B, L, hidden_size]
    pooler_output: Tensor       # [B, hidden_size]: the state at each sequence's first eos token


class CLIPTextEncoder(nn.Module):
    """transformers' CLIPTextModel: same submodule and parameter names, same outputs."""

    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        self.config = config
        self.embeddings = CLIPTextEmbeddings(config)
        self.encoder = CLIPEncoder(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: Tensor, attention_mask: Optional[Tensor] = None) -> CLIPTextOutput:
        """input_ids int [B, L] (L <= max_position_embeddings); attention_mask [B, L], 1 = real token,
        0 = padding (ignored as a key; Stable Diffusion passes none)."""
        if input_ids.dim() != 2 or input_ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"input_ids must be an int tensor [B, L], got {input_ids.dtype} "
                             f"{tuple(input_ids.shape)}")
        L = input_ids.shape[1]
        if not 1 <= L <= self.config.max_position_embeddings:
            raise ValueError(f"input_ids has {L} tokens; this encoder takes 1..{self.config.max_position_embeddings} "
                             f"(tokenize with truncation)")
        pad = None
        if attention_mask is not None:
            if tuple(attention_mask.shape) != tuple(input_ids.shape):
                raise ValueError(f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, "
                                 f"got {tuple(attention_mask.shape)}")
            pad = attention_mask == 0
        x = self.embeddings(input_ids)
        for layer in self.encoder.layers:
            x = layer(x, pad)
        x = self.final_layer_norm(x)
        rows = torch.arange(x.shape[0], device=x.device)
        ids = input_ids.to(torch.int)
        # transformers' rule: eos_token_id 2 is its legacy config (eos = the highest id in a row)
        eos = ids.argmax(-1) if self.config.eos_token_id == 2 else (ids == self.config.eos_token_id).int().argmax(-1)
        return CLIPTextOutput(x, x[rows, eos])


def load_clip_text_encoder(model: Any, config: Any = None) -> CLIPTextEncoder:
    """Ours from a transformers ``CLIPTextModel`` (instance), or from its ``state_dict`` and config
    (a transformers CLIPTextConfig, a dict of its fields, or our CLIPTextConfig). Keys may carry the
    ``text_model.`` prefix of older checkpoints."""
    if isinstance(model, nn.Module):
        config = model.config if config is None else config
        state = model.state_dict()
    elif isinstance(model, Mapping):
        if config is None:
            raise ValueError("load_clip_text_encoder: a state_dict needs its `config`")
        state = model
    else:
        raise TypeError(f"load_clip_text_encoder: expected a CLIPTextModel or a state_dict, got "
                        f"{type(model).__name__}")
    cfg = config if isinstance(config, CLIPTextConfig) else CLIPTextConfig.from_transformers(config)
    state = {k.removeprefix("text_model."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.endswith("position_ids")}  # a buffer of arange
    enc = CLIPTextEncoder(cfg)
    enc.load_state_dict(state, strict=True)
    return enc.to(next(iter(state.values())).dtype) if state else enc
