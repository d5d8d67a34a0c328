"""VectorQuantizer: a complete VQ-VAE / VQGAN quantisation layer on the fused nearest-code search.

    vq = VectorQuantizer(1024, 64, beta=0.25)                         # codebook [1024, 64]
    out = vq(z)                                  # z [N, D, H, W] (or [..., D])
    out.quantized, out.indices, out.loss         # + codebook_loss, commitment_loss, perplexity, usage

    vq = VectorQuantizer(8192, 8, ema=True, decay=0.99, dead_code_threshold=1.0, init="kmeans++")
    vq = VectorQuantizer.from_diffusers(vq_model.quantize)            # diffusers VQModel quantizer

The nearest code comes from ``genkernels.vq_nearest`` (no M x K distance matrix, on every backend);
everything differentiable (gathering the chosen codes, the losses, the straight-through estimator)
is plain PyTorch, so autograd and ``torch.compile`` see it.

Losses (van den Oord et al., 2017), ``sg`` = stop-gradient, ``e`` = the chosen code of each vector:

- ``codebook_loss   = mean((e - sg(z))^2)``: moves the codes towards the encoder outputs (gradient to
  the codebook only).
- ``commitment_loss = beta * mean((z - sg(e))^2)``: keeps the encoder committed to its codes (gradient
  to the encoder only). **beta belongs here.**
- ``loss = codebook_loss + commitment_loss`` (with ``ema=True`` the codebook is not trained by
  gradients, so ``loss = commitment_loss``; ``codebook_loss`` is still reported).

The widely copied legacy variant (taming-transformers; diffusers' ``VectorQuantizer(legacy=True)``, the
default that diffusers' ``VQModel`` uses) computes
``mean((sg(e) - z)^2) + beta * mean((e - sg(z))^2)``, i.e. beta scales the *codebook* term and the
commitment term gets weight 1. ``legacy=True`` reproduces that (``codebook_loss`` then carries the beta
and ``commitment_loss`` does not), for checkpoints trained with it; the default is the paper's placement.

Options: ``cosine=True`` (l2-normalised z and codes: the search, the output and the losses use the
unit vectors), EMA codebook updates (``ema``, ``decay``, ``epsilon``: Laplace-smoothed cluster sizes),
dead-code restart (``dead_code_threshold``: in training, codes whose running usage, an EMA of per-batch
counts, falls below it are replaced by random vectors of the current batch), data-dependent
initialisation on the first training batch (``init="kmeans++"`` with optional ``kmeans_iters`` Lloyd
steps, or ``init="random"``: random vectors of the batch). Codebook updates (EMA, restarts,
initialisation) happen in training mode under ``no_grad`` after the output is computed, and never
synchronise with the host except for the one-time initialisation.

State dict: ``embedding.weight`` [K, D] (the name diffusers' ``VectorQuantizer`` uses, so a ``VQModel``'s
``quantize`` weights load directly) plus the buffers ``ema_cluster_size`` [K], ``ema_embed_sum`` [K, D]
(EMA only) and ``initialized``; a state dict without the buffers (diffusers) loads with them set from
the loaded codebook.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.vq_nearest import COSINE_EPS, vq_nearest

Tensor = torch.Tensor
_KMEANSPP_MAX_POINTS = 1 << 16  # k-means++ seeds from at most this many random vectors of the batch


class VQOutput(NamedTuple):
    quantized: Tensor        # the input's shape: z + sg(e - z) (straight-through gradient to z)
    indices: Tensor          # int64, the input's shape without the channel dim
    loss: Tensor             # codebook_loss + commitment_loss (commitment_loss only with ema=True)
    codebook_loss: Tensor
    commitment_loss: Tensor
    perplexity: Tensor       # exp(entropy of this batch's code usage)
    usage: Tensor            # int64 [K]: how many vectors of this batch chose each code


class VectorQuantizer(nn.Module):
    """Vector quantisation layer: nearest-code lookup, straight-through gradients, VQ-VAE losses.

    Args:
        num_embeddings: codebook size K.
        embedding_dim: code dimension D (the channel count of the input).
        beta: commitment weight (see the module docstring for where it goes, and ``legacy``).
        cosine: search, output and losses on l2-normalised vectors.
        ema: update the codebook by exponential moving averages instead of gradients.
        decay, epsilon: EMA decay and Laplace smoothing of the cluster sizes.
        dead_code_threshold: restart codes whose running usage (EMA of counts per batch) is below it
            (0 disables).
        init: None (uniform(-1/K, 1/K), as diffusers), "kmeans++" or "random" (from the first batch).
        kmeans_iters: Lloyd iterations after k-means++ seeding.
        legacy: diffusers/taming's loss weighting (beta on the codebook term).
        channel_dim: the dim of the input holding D; default 1 for 4-D inputs ([N, D, H, W]), else -1.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, beta: float = 0.25, *, cosine: bool = False,
                 ema: bool = False, decay: float = 0.99, epsilon: float = 1e-5, dead_code_threshold: float = 0.0,
                 init: Optional[str] = None, kmeans_iters: int = 0, legacy: bool = False,
                 channel_dim: Optional[int] = None, device=None, dtype=None):
        super().__init__()
        if num_embeddings < 1 or embedding_dim < 1:
            raise ValueError(f"VectorQuantizer: `num_embeddings` and `embedding_dim` must be >= 1, got "
                             f"{num_embeddings} and {embedding_dim}")
        if init not in (None, "kmeans++", "random"):
            raise ValueError(f"VectorQuantizer: `init` must be None, 'kmeans++' or 'random', got {init!r}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"VectorQuantizer: `decay` must be in [0, 1), got {decay}")
        if dead_code_threshold < 0:
            raise ValueError(f"VectorQuantizer: `dead_code_threshold` must be >= 0, got {dead_code_threshold}")
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        self.beta, self.cosine, self.ema = float(beta), bool(cosine), bool(ema)
        self.decay, self.epsilon = float(decay), float(epsilon)
        self.dead_code_threshold = float(dead_code_threshold)
        self.init, self.kmeans_iters, self.legacy = init, int(kmeans_iters), bool(legacy)
        self.channel_dim = channel_dim
        fk = dict(device=device)
        self.embedding = nn.Embedding(self.num_embeddings, self.embedding_dim, device=device, dtype=dtype)
        with torch.no_grad():
            self.embedding.weight.uniform_(-1.0 / self.num_embeddings, 1.0 / self.num_embeddings)
        if self.ema:
            self.embedding.weight.requires_grad_(False)
        self.register_buffer("ema_cluster_size", torch.ones(self.num_embeddings, dtype=torch.float32, **fk))
        if self.ema:
            self.register_buffer("ema_embed_sum", self.embedding.weight.detach().float().clone())
        self.register_buffer("initialized", torch.tensor(init is None, **fk))
        self._pending_init = init is not None

    # ------------------------------------------------------------------------------- construction
    @classmethod
    def from_diffusers(cls, quantizer: nn.Module, **kwargs) -> "VectorQuantizer":
        """A VectorQuantizer with the weights, beta and loss convention of diffusers' ``VectorQuantizer``
        (e.g. ``VQModel.quantize``). Index remapping (``remap=...``) is not supported."""
        if getattr(quantizer, "remap", None) is not None:
            raise ValueError("VectorQuantizer.from_diffusers: quantizers with `remap` are not supported")
        w = quantizer.embedding.weight
        kwargs.setdefault("beta", float(quantizer.beta))
        kwargs.setdefault("legacy", bool(getattr(quantizer, "legacy", True)))
        m = cls(w.shape[0], w.shape[1], device=w.device, dtype=w.dtype, **kwargs)
        m.load_state_dict(quantizer.state_dict())
        return m

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        optional = ["ema_cluster_size", "initialized"] + (["ema_embed_sum"] if self.ema else [])
        absent = [n for n in optional if prefix + n not in state_dict]
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        for n in absent:
            if prefix + n in missing_keys:
                missing_keys.remove(prefix + n)
        with torch.no_grad():
            if "ema_cluster_size" in absent:
                self.ema_cluster_size.fill_(1.0)
            if "ema_embed_sum" in absent:  # children load after this: read the weight from the dict
                w = state_dict.get(prefix + "embedding.weight", self.embedding.weight)
                if tuple(w.shape) == tuple(self.ema_embed_sum.shape):
                    self.ema_embed_sum.copy_(w.float())
            if "initialized" in absent:
                self.initialized.fill_(True)
        self._pending_init = not bool(self.initialized)

    # ------------------------------------------------------------------------------- forward
    def _channel_dim(self, x: Tensor) -> int:
        if self.channel_dim is not None:
            return self.channel_dim % x.dim()
        return 1 if x.dim() == 4 else x.dim() - 1

    def forward(self, z: Tensor) -> VQOutput:
        if not isinstance(z, Tensor) or z.dim() < 2:
            raise ValueError(f"VectorQuantizer: `z` must be a tensor with at least 2 dims, got "
                             f"{tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__}")
        cdim = self._channel_dim(z)
        zl = z.movedim(cdim, -1)
        if zl.shape[-1] != self.embedding_dim:
            raise ValueError(f"VectorQuantizer: `z` has {zl.shape[-1]} channels on dim {cdim}, expected "
                             f"embedding_dim={self.embedding_dim}")
        flat = zl.reshape(-1, self.embedding_dim)
        w = self.embedding.weight
        if self.training and self._pending_init and flat.shape[0] > 0:
            self._init_codebook(flat.detach())
            w = self.embedding.weight

        idx, _ = vq_nearest(flat.detach().to(w.dtype), w.detach(), cosine=self.cosine)
        e = F.embedding(idx, w)
        zf = flat
        if self.cosine:
            zf = F.normalize(flat, dim=-1, eps=COSINE_EPS)
            e = F.normalize(e, dim=-1, eps=COSINE_EPS)
        zc = zf.to(e.dtype)
        # Empty input: mse_loss of empty tensors is NaN; report zeros instead.
        if flat.shape[0] == 0:
            d_codebook = e.sum() * 0
            d_commit = zc.sum() * 0
        else:
            d_codebook = F.mse_loss(e, zc.detach())      # gradient to the codebook
            d_commit = F.mse_loss(zc, e.detach())        # gradient to the encoder
        if self.legacy:
            codebook_loss, commitment_loss = self.beta * d_codebook, d_commit
        else:
            codebook_loss, commitment_loss = d_codebook, self.beta * d_commit
        loss = commitment_loss if self.ema else codebook_loss + commitment_loss

        q = zf + (e.to(zf.dtype) - zf).detach()   # straight-through: dq/dz = identity
        usage = torch.zeros(self.num_embeddings, dtype=torch.int64, device=idx.device)
        usage.scatter_add_(0, idx, torch.ones_like(idx))
        probs = usage.float() / max(idx.numel(), 1)
        perplexity = torch.exp(-(probs * torch.log(probs + 1e-10)).sum())

        if self.training and flat.shape[0] > 0:
            self._update_codebook(zf.detach(), idx, usage)

        out = q.reshape(zl.shape).movedim(-1, cdim)
        if z.is_contiguous() and not out.is_contiguous():
            out = out.contiguous()
        return VQOutput(out, idx.reshape(zl.shape[:-1]), loss, codebook_loss, commitment_loss, perplexity, usage)

    # ------------------------------------------------------------------------------- training updates
    @torch.no_grad()
    def _update_codebook(self, zf: Tensor, idx: Tensor, usage: Tensor) -> None:
        K, decay = self.num_embeddings, self.decay
        counts = usage.to(self.ema_cluster_size.dtype)
        self.ema_cluster_size.mul_(decay).add_(counts, alpha=1 - decay)
        w = self.embedding.weight
        if self.ema:
            batch_sum = torch.zeros_like(self.ema_embed_sum).index_add_(0, idx, zf.float())
            self.ema_embed_sum.mul_(decay).add_(batch_sum, alpha=1 - decay)
            n = self.ema_cluster_size.sum()
            smoothed = (self.ema_cluster_size + self.epsilon) / (n + K * self.epsilon) * n
            w.data.copy_((self.ema_embed_sum / smoothed[:, None]).to(w.dtype))
        if self.dead_code_threshold > 0:
            # No host sync: every code gets a candidate from the batch, dead ones take it.
            dead = self.ema_cluster_size < self.dead_code_threshold
            pick = torch.randint(0, zf.shape[0], (K,), device=zf.device)
            sampled = zf[pick].float()
            w.data.copy_(torch.where(dead[:, None], sampled.to(w.dtype), w.data))
            reset = torch.full_like(self.ema_cluster_size, self.dead_code_threshold)
            self.ema_cluster_size.copy_(torch.where(dead, reset, self.ema_cluster_size))
            if self.ema:
                self.ema_embed_sum.copy_(torch.where(dead[:, None], sampled * self.dead_code_threshold,
                                                     self.ema_embed_sum))

    @torch.no_grad()
    def _init_codebook(self, flat: Tensor) -> None:
        x = flat.float()
        if self.cosine:
            x = F.normalize(x, dim=-1, eps=COSINE_EPS)
        K = self.num_embeddings
        if self.init == "random":
            sel = (torch.randperm(x.shape[0], device=x.device)[:K] if x.shape[0] >= K
                   else torch.randint(0, x.shape[0], (K,), device=x.device))
            centers = x[sel]
        else:
            centers = kmeans(x, K, iters=self.kmeans_iters)
        w = self.embedding.weight
        w.data.copy_(centers.to(w.dtype))
        self.ema_cluster_size.fill_(1.0)
        if self.ema:
            self.ema_embed_sum.copy_(centers)
        self.initialized.fill_(True)
        self._pending_init = False

    # ------------------------------------------------------------------------------- decoding
    def get_codebook_entry(self, indices: Tensor, shape: Optional[tuple] = None) -> Tensor:
        """The codes of `indices`; with `shape` = (N, H, W, D) (diffusers' convention) returned as
        [N, D, H, W]."""
        e = self.embedding(indices)
        if self.cosine:
            e = F.normalize(e, dim=-1, eps=COSINE_EPS)
        if shape is not None:
            e = e.view(shape).permute(0, 3, 1, 2).contiguous()
        return e

    def extra_repr(self) -> str:
        s = f"{self.num_embeddings}, {self.embedding_dim}, beta={self.beta}"
        for k in ("cosine", "ema", "legacy"):
            if getattr(self, k):
                s += f", {k}=True"
        if self.ema:
            s += f", decay={self.decay}, epsilon={self.epsilon}"
        if self.dead_code_threshold:
            s += f", dead_code_threshold={self.dead_code_threshold}"
        if self.init:
            s += f", init={self.init!r}"
        return s


@torch.no_grad()
def kmeans(x: Tensor, k: int, iters: int = 0, generator: Optional[torch.Generator] = None) -> Tensor:
    """k centres of the rows of x [N, D] (float32): k-means++ seeding (D^2 sampling, on at most
    65536 random rows), then `iters` Lloyd steps on all rows (assignments by vq_nearest). With fewer
    distinct points than k, the remaining centres repeat points (sampled uniformly)."""
    N, D = x.shape
    if N > _KMEANSPP_MAX_POINTS:
        seed_pts = x[torch.randperm(N, device=x.device, generator=generator)[:_KMEANSPP_MAX_POINTS]]
    else:
        seed_pts = x
    n = seed_pts.shape[0]
    centers = torch.empty((k, D), dtype=x.dtype, device=x.device)
    first = torch.randint(0, n, (1,), device=x.device, generator=generator)
    centers[0] = seed_pts.index_select(0, first)[0]
    d2 = (seed_pts - centers[0]).square().sum(1)
    ones = torch.ones_like(d2)
    for j in range(1, k):
        # D^2 sampling; uniform once every point coincides with a centre (no host sync either way)
        w = torch.where(d2.sum() > 0, d2, ones)
        i = torch.multinomial(w, 1, generator=generator)
        centers[j] = seed_pts.index_select(0, i)[0]
        d2 = torch.minimum(d2, (seed_pts - centers[j]).square().sum(1))
    for _ in range(iters):
        idx, _ = vq_nearest(x, centers)
        sums = torch.zeros_like(centers).index_add_(0, idx, x)
        cnt = torch.zeros(k, dtype=x.dtype, device=x.device).index_add_(0, idx, torch.ones_like(x[:, 0]))
        centers = torch.where(cnt[:, None] > 0, sums / cnt.clamp(min=1)[:, None], centers)
    return centers
