"""Autoencoder: conv encoder -> a latent smaller than the image -> conv decoder, trained on MSE.

    m = genkernels.models.build("autoencoder", preset="digits")
    z = m.encode(x)                      # x [N, C, H, W] in [-1, 1] -> z [N, latent_channels, H/f, W/f]
    x_hat = m.decode(z)

The encoder and decoder are those of latent diffusion's autoencoders (diffusers' ``Encoder`` /
``Decoder``, genkernels.models.blocks): ResNet blocks on the fused ``group_norm_silu``, a mid-block with
self-attention on the fused ``attention``; each block but the last halves (encoder) or doubles (decoder)
H and W, so f = 2 ** (len(block_out_channels) - 1).

:class:`Autoencoder` is also the base of ``vae`` (genkernels.models.vae) and ``vqvae``
(genkernels.models.vqvae): they change what sits between encoder and decoder and the loss, and share
the preview, generate and evaluate below. ``evaluate`` reports the held-out reconstruction error beside
the plain baseline of the same size, :func:`bicubic_baseline`: bicubic down-sampling to as many numbers
as the latent holds, then bicubic up-sampling.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .. import data, metrics
from .base import Config, Model
from .blocks import Decoder, Encoder

Tensor = torch.Tensor
_EVAL_BATCH = 128


def bicubic_baseline(x: Tensor, numbers: int) -> Tuple[Tensor, Tuple[int, int]]:
    """x [N, C, H, W] squeezed through `numbers` values per image and back: bicubic (antialiased) down to
    the most nearly square h x w with C*h*w <= numbers, bicubic up to H x W, clamped to [-1, 1].
    Returns (the reconstruction, (h, w))."""
    C, H, W = x.shape[1:]
    per_channel = numbers // C
    if per_channel < 1:
        raise ValueError(f"bicubic_baseline: `numbers`={numbers} is fewer than the {C} channels")
    h = min(H, math.isqrt(per_channel))
    w = min(W, per_channel // h)
    small = F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False, antialias=True)
    up = F.interpolate(small, size=(H, W), mode="bicubic", align_corners=False)
    return up.clamp(-1, 1), (h, w)


@dataclass
class AutoencoderConfig(Config):
    image_size: int = 16
    block_out_channels: Tuple[int, ...] = (16, 32, 32)   # one block per entry; all but the last resample
    layers_per_block: int = 1
    latent_channels: int = 2
    norm_num_groups: int = 8
    mid_block_add_attention: bool = True
    lr: float = 1e-3


class Autoencoder(Model):
    name = "autoencoder"
    description = "Convolutional autoencoder (ResNet blocks on fused group_norm_silu, mid-block attention), MSE"
    Config = AutoencoderConfig
    presets = {
        "tiny": dict(image_size=8, block_out_channels=(8, 16), latent_channels=2, norm_num_groups=4,
                     batch_size=8, steps=20),
        "digits": dict(image_size=16, block_out_channels=(16, 32, 32), latent_channels=2, batch_size=32,
                       steps=400),
        "photos": dict(data="photos", image_size=64, in_channels=3, block_out_channels=(64, 128, 256),
                       layers_per_block=2, latent_channels=4, norm_num_groups=32, batch_size=16, steps=5000),
    }
    encoder_out_channels_factor = 1   # the VAE's encoder returns mean and log-variance (2)

    def __init__(self, config: AutoencoderConfig):
        super().__init__(config)
        c = config
        chans = tuple(c.block_out_channels)
        if not chans or any(ch % c.norm_num_groups for ch in chans):
            raise ValueError(f"{self.name}: `norm_num_groups`={c.norm_num_groups} must divide every entry of "
                             f"`block_out_channels`={chans}")
        self.downscale = 2 ** (len(chans) - 1)
        if c.image_size % self.downscale:
            raise ValueError(f"{self.name}: `image_size`={c.image_size} must be a multiple of {self.downscale} "
                             f"(2 ** (len(block_out_channels) - 1))")
        self.encoder = Encoder(c.in_channels, c.latent_channels, chans, c.layers_per_block, c.norm_num_groups,
                               double_z=self.encoder_out_channels_factor == 2,
                               mid_block_add_attention=c.mid_block_add_attention)
        self.decoder = Decoder(c.latent_channels, c.in_channels, chans, c.layers_per_block, c.norm_num_groups,
                               mid_block_add_attention=c.mid_block_add_attention)

    # ------------------------------------------------------------------ the networks
    @property
    def latent_shape(self) -> Tuple[int, int, int]:
        s = self.config.image_size // self.downscale
        return (self.config.latent_channels, s, s)

    @property
    def latent_numbers(self) -> int:
        """How many numbers the latent of one image holds (the size of the bicubic baseline)."""
        return math.prod(self.latent_shape)

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def reconstruct(self, x: Tensor) -> Tensor:
        """The deterministic reconstruction of x (no sampling)."""
        return self.decode(self.encode(x))

    # ------------------------------------------------------------------ training
    def forward(self, batch: Dict[str, Tensor], phase: str = "main", step: int = 0
                ) -> Tuple[Tensor, Dict[str, Tensor]]:
        x = batch["image"]
        mse = F.mse_loss(self.reconstruct(x), x)
        return mse, {"mse": mse}

    # ------------------------------------------------------------------ inference
    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def _held_out(self, num: int, generator: Optional[torch.Generator], split: str = "test") -> Tensor:
        """num images of `split` (a random choice by `generator`, the first num without one)."""
        images = data.load(self.config.data, split, self.config.image_size)["image"]
        if generator is not None:
            images = images[torch.randperm(len(images), generator=generator)]
        return images[:num].to(self._device())

    def _batched(self, fn, x: Tensor) -> Tensor:
        return torch.cat([fn(chunk) for chunk in x.split(_EVAL_BATCH)]) if len(x) else fn(x)

    @torch.no_grad()
    def preview(self, batch: Dict[str, Tensor], generator: torch.Generator) -> Tensor:
        """8 inputs followed by their reconstructions."""
        x = batch["image"][:8].to(self._device())
        return torch.cat([x, self.reconstruct(x).clamp(-1, 1)])

    @torch.no_grad()
    def generate(self, num: int, generator: torch.Generator, **options: Any) -> Tensor:
        """Reconstructions of `num` random held-out images."""
        return self._batched(self.reconstruct, self._held_out(num, generator)).clamp(-1, 1)

    def _bounds(self, metric: str, value: float, num: int) -> Dict[str, Any]:
        if self.config.data == "digits":
            return metrics.bounds(metric, value, num, self.config.image_size)
        return {"value": value}   # floors / ceilings are defined on digits

    @torch.no_grad()
    def evaluate(self, split: str = "test", num: int = 500, generator: Optional[torch.Generator] = None
                 ) -> Dict[str, Any]:
        """Reconstruction MSE / PSNR of `num` held-out images, the bicubic baseline of the same latent
        size, FD-digits of the reconstructions (digits), plus the subclass's own metrics."""
        was_training = self.training
        self.eval()
        try:
            x = self._held_out(num, None, split)
            recon = self._batched(self.reconstruct, x).clamp(-1, 1)
            base, (h, w) = bicubic_baseline(x, self.latent_numbers)
            n = len(x)
            out: Dict[str, Any] = {
                "split": split, "num": n, "latent_shape": list(self.latent_shape),
                "latent_numbers": self.latent_numbers,
                "mse": self._bounds("mse", metrics.mse(recon, x), n),
                "psnr": self._bounds("psnr", metrics.psnr(recon, x), n),
                "baseline_bicubic": {"size": [h, w], "numbers": x.shape[1] * h * w,
                                     "mse": metrics.mse(base, x), "psnr": metrics.psnr(base, x)},
            }
            out["psnr_minus_baseline"] = out["psnr"]["value"] - out["baseline_bicubic"]["psnr"]
            if self.config.data == "digits":
                out["fd_digits_reconstructions"] = self._bounds("fd_digits", metrics.fd_digits(recon, x), n)
            out.update(self._evaluate_more(x, generator))
            return out
        finally:
            self.train(was_training)

    def _evaluate_more(self, x: Tensor, generator: Optional[torch.Generator]) -> Dict[str, Any]:
        """Model-specific metrics on the held-out images x (subclasses)."""
        return {}


# ---------------------------------------------------------------------- diffusers AutoencoderKL / VQModel
def diffusers_fields(cfg: Mapping[str, Any], who: str, latent_channels: int) -> Dict[str, Any]:
    """Our encoder / decoder config fields from a diffusers AutoencoderKL / VQModel config (defaults as
    diffusers'); configs our Encoder / Decoder cannot express are a ValueError."""
    get = lambda k, d: d if cfg.get(k) is None else cfg[k]  # noqa: E731
    chans = tuple(get("block_out_channels", (64,)))
    n = len(chans)
    down, up = tuple(get("down_block_types", ("DownEncoderBlock2D",))), tuple(get("up_block_types", ("UpDecoderBlock2D",)))
    if down != ("DownEncoderBlock2D",) * n or up != ("UpDecoderBlock2D",) * n:
        raise ValueError(f"{who}: only DownEncoderBlock2D / UpDecoderBlock2D blocks are supported, got {down} / {up}")
    if get("act_fn", "silu") not in ("silu", "swish"):
        raise ValueError(f"{who}: act_fn must be 'silu', got {cfg['act_fn']!r}")
    if get("norm_type", "group") != "group":
        raise ValueError(f"{who}: norm_type must be 'group', got {cfg['norm_type']!r}")
    if get("in_channels", 3) != get("out_channels", 3):
        raise ValueError(f"{who}: in_channels ({get('in_channels', 3)}) must equal out_channels "
                         f"({get('out_channels', 3)})")
    size = get("sample_size", 32)
    size = size[0] if isinstance(size, (list, tuple)) else size
    return dict(in_channels=get("in_channels", 3), block_out_channels=chans, layers_per_block=get("layers_per_block", 1),
                latent_channels=get("latent_channels", latent_channels), norm_num_groups=get("norm_num_groups", 32),
                image_size=int(size), mid_block_add_attention=bool(get("mid_block_add_attention", True)),
                data="photos" if get("in_channels", 3) == 3 else "digits")


# diffusers' pre-0.14 attention names, still found in older checkpoints' state dicts
_OLD_ATTENTION_NAMES = {".query.": ".to_q.", ".key.": ".to_k.", ".value.": ".to_v.", ".proj_attn.": ".to_out.0."}


def diffusers_state_dict(state_dict: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """A diffusers autoencoder state dict with the old attention names renamed to the current ones."""
    out = {}
    for k, v in state_dict.items():
        if ".attentions." in k:
            for old, new in _OLD_ATTENTION_NAMES.items():
                k = k.replace(old, new)
        out[k] = v
    return out


def diffusers_source(m: Any, config: Optional[Mapping[str, Any]], who: str) -> Tuple[Dict[str, Tensor], Dict]:
    """(state dict, config dict) of a diffusers model instance, or of a state dict plus its config."""
    if isinstance(m, nn.Module):
        config = config if config is not None else getattr(m, "config", None)
        if config is None:
            raise ValueError(f"{who}: `m` has no .config; pass `config`")
        return m.state_dict(), dict(config)
    if isinstance(m, Mapping):
        if config is None:
            raise ValueError(f"{who}: a state dict needs `config` (the diffusers config dict)")
        return dict(m), dict(config)
    raise TypeError(f"{who}: `m` must be a diffusers model or a state dict, got {type(m).__name__}")
