"""VQ-VAE (van den Oord et al., 2017) in the layout of diffusers' VQModel.

    m = genkernels.models.build("vqvae", preset="digits")
    h = m.encode(x)                      # pre-quantisation latents [N, vq_embed_dim, H/f, W/f]
    out = m.quantize(h)                  # VQOutput: quantized, indices [N, H/f, W/f], losses, perplexity
    x_hat = m.decode(h)                  # quantise, post_quant_conv, decoder (diffusers' VQModel.decode)
    x_hat = m.decode_indices(out.indices)
    vq = genkernels.models.load_diffusers_vq(vq_model)   # same encode / decode as diffusers

Network: encoder -> quant_conv (1x1 to vq_embed_dim) -> ``genkernels.nn.VectorQuantizer`` (nearest code
by the fused ``vq_nearest``; straight-through gradient; EMA codebook and dead-code restart by default)
-> post_quant_conv -> decoder. Loss: ``mse(x_hat, x) + vq.loss`` where ``vq.loss`` is the commitment
loss ``beta * |h - sg(e)|^2`` (plus the codebook loss when the codebook learns by gradient, ``ema=False``).
Logged: codebook perplexity and the fraction of codes used in the batch.

The latent of an image is its grid of code indices, so ``latent_numbers`` (the size of the bicubic
baseline in ``evaluate``) counts indices; ``evaluate`` also reports the baseline with as many numbers
as the code vectors hold (indices x vq_embed_dim).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .. import metrics
from ..nn import VectorQuantizer, VQOutput
from .autoencoder import (Autoencoder, AutoencoderConfig, bicubic_baseline, diffusers_fields, diffusers_source,
                          diffusers_state_dict)

Tensor = torch.Tensor


@dataclass
class VQVAEConfig(AutoencoderConfig):
    latent_channels: int = 8
    vq_embed_dim: Optional[int] = None    # code dimension; None: latent_channels
    num_vq_embeddings: int = 128
    beta: float = 0.25                    # commitment weight
    vq_ema: bool = True                   # codebook by exponential moving averages (else by gradient)
    vq_decay: float = 0.99
    dead_code_threshold: float = 0.1      # restart codes whose running usage per batch falls below it
    vq_init: Optional[str] = "kmeans++"   # codebook from the first batch (None: uniform, as diffusers)
    legacy_loss: bool = False             # diffusers / taming's beta placement (see VectorQuantizer)
    scaling_factor: float = 1.0


class VQVAE(Autoencoder):
    name = "vqvae"
    description = "VQ-VAE (diffusers VQModel layout) on the fused vq_nearest: EMA codebook, dead-code restart"
    Config = VQVAEConfig
    presets = {
        "tiny": dict(Autoencoder.presets["tiny"], latent_channels=4, num_vq_embeddings=16),
        "digits": dict(Autoencoder.presets["digits"], latent_channels=8, num_vq_embeddings=128),
        "photos": dict(Autoencoder.presets["photos"], latent_channels=4, num_vq_embeddings=1024),
    }

    def __init__(self, config: VQVAEConfig):
        super().__init__(config)
        c = config
        D = c.vq_embed_dim or c.latent_channels
        self.quant_conv = nn.Conv2d(c.latent_channels, D, 1)
        self.quantize = VectorQuantizer(c.num_vq_embeddings, D, c.beta, ema=c.vq_ema, decay=c.vq_decay,
                                        dead_code_threshold=c.dead_code_threshold, init=c.vq_init,
                                        legacy=c.legacy_loss)
        self.post_quant_conv = nn.Conv2d(D, c.latent_channels, 1)

    # ------------------------------------------------------------------ the networks
    @property
    def latent_numbers(self) -> int:
        """One code index per latent position."""
        return math.prod(self.latent_shape[1:])

    def encode(self, x: Tensor) -> Tensor:
        """Pre-quantisation latents (quant_conv(encoder(x)))."""
        return self.quant_conv(self.encoder(x))

    def quantize_frozen(self, h: Tensor) -> VQOutput:
        """The quantizer without its training-time codebook updates (for inference in any mode)."""
        was = self.quantize.training
        self.quantize.eval()
        try:
            return self.quantize(h)
        finally:
            self.quantize.train(was)

    def decode(self, h: Tensor, force_not_quantize: bool = False) -> Tensor:
        q = h if force_not_quantize else self.quantize_frozen(h).quantized
        return self.decoder(self.post_quant_conv(q))

    def decode_indices(self, indices: Tensor) -> Tensor:
        """Images of code-index grids [N, h, w]."""
        N, h, w = indices.shape
        q = self.quantize.get_codebook_entry(indices.flatten(), (N, h, w, self.quantize.embedding_dim))
        return self.decode(q, force_not_quantize=True)

    # ------------------------------------------------------------------ objective
    def forward(self, batch: Dict[str, Tensor], phase: str = "main", step: int = 0
                ) -> Tuple[Tensor, Dict[str, Tensor]]:
        x = batch["image"]
        vq = self.quantize(self.encode(x))          # training mode: EMA / restart updates of the codebook
        x_hat = self.decoder(self.post_quant_conv(vq.quantized))
        mse = F.mse_loss(x_hat, x)
        return mse + vq.loss, {"mse": mse, "commitment": vq.commitment_loss, "codebook": vq.codebook_loss,
                               "perplexity": vq.perplexity, "usage": (vq.usage > 0).float().mean()}

    # ------------------------------------------------------------------ inference
    def _evaluate_more(self, x: Tensor, generator: Optional[torch.Generator]) -> Dict[str, Any]:
        """Codebook perplexity / usage on the held-out images; the bicubic baseline with as many numbers as
        the chosen code vectors hold."""
        idx = torch.cat([self.quantize_frozen(self.encode(chunk)).indices for chunk in x.split(128)])
        D = self.quantize.embedding_dim
        base, (h, w) = bicubic_baseline(x, self.latent_numbers * D)
        return {"codebook": dict(metrics.codebook_usage(idx, self.quantize.num_embeddings),
                                 num_codes=self.quantize.num_embeddings),
                "baseline_bicubic_code_vectors": {"size": [h, w], "numbers": x.shape[1] * h * w,
                                                  "mse": metrics.mse(base, x), "psnr": metrics.psnr(base, x)}}


# ---------------------------------------------------------------------- diffusers VQModel
def vq_config_from_diffusers(cfg: Mapping[str, Any], **overrides: Any) -> VQVAEConfig:
    """Our VQVAEConfig for a diffusers VQModel config: its quantizer's convention (gradient-trained
    codebook, beta 0.25 on the codebook term: legacy), no EMA, no restarts, no data initialisation."""
    if cfg.get("lookup_from_codebook"):
        raise ValueError("load_diffusers_vq: VQModel configs with lookup_from_codebook are not supported")
    fields = diffusers_fields(cfg, "load_diffusers_vq", latent_channels=3)
    fields.update(num_vq_embeddings=int(cfg.get("num_vq_embeddings") or 256), vq_embed_dim=cfg.get("vq_embed_dim"),
                  scaling_factor=float(cfg.get("scaling_factor") or 0.18215), beta=0.25, vq_ema=False,
                  dead_code_threshold=0.0, vq_init=None, legacy_loss=True)
    fields.update(overrides)
    return VQVAEConfig(**fields)


def load_diffusers_vq(m: Any, config: Optional[Mapping[str, Any]] = None, **overrides: Any) -> VQVAE:
    """Our VQVAE with the weights of a diffusers ``VQModel`` (an instance, or its state dict plus its
    config dict): the same encode / decode (quantised or not)."""
    state, cfg = diffusers_source(m, config, "load_diffusers_vq")
    if isinstance(m, nn.Module) and getattr(m.quantize, "remap", None) is not None:
        raise ValueError("load_diffusers_vq: quantizers with `remap` are not supported")
    if isinstance(m, nn.Module):
        overrides.setdefault("beta", float(m.quantize.beta))
        overrides.setdefault("legacy_loss", bool(getattr(m.quantize, "legacy", True)))
    ours = VQVAE(vq_config_from_diffusers(cfg, **overrides))
    ours.load_state_dict(diffusers_state_dict(state), strict=True)
    return ours
