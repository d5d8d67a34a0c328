"""End-to-end benchmark cases of the models in genkernels.models (``genkernels bench --ops <name>``).

Each model section registers its cases with :func:`genkernels.benchmark.register`: the model's hot
path with its fused ops (``genkernels[b]``, per available backend, ``reference`` included) against the
same weights in plain PyTorch (``eager``) and ``torch.compile`` of that (``compile``). Random weights
built from the model's config; nothing is downloaded. Sections are appended per model.
"""
from __future__ import annotations

import copy
import math
from typing import List

import torch

from .benchmark import COMPILE, EAGER, Case, backend_of, impl_names, make_pass, register


# ------------------------------------------------------------------------------------------ autoencoders
# autoencoder / vae / vqvae (genkernels.models.autoencoder, vae, vqvae): one training step (loss forward +
# gradients of every parameter; the optimizer update is the same for every impl and left out) and one
# decode (latent -> image, no grad), for the `digits` preset (its batch) and the larger `photos` preset
# (64x64 RGB, batch 2). Impls: ``eager`` / ``compile``: the same weights with torch's own GroupNorm +
# SiLU and scaled_dot_product_attention (plain PyTorch, and torch.compile of it); ``genkernels[b]``: the
# model as written on backend b.
AE_CASES = {"digits": None, "photos": 2}    # preset -> batch (None: the preset's batch_size)


class _TorchGroupNormSiLU(torch.nn.GroupNorm):
    """GroupNormSiLU's function in plain PyTorch ops (for the eager / compile baselines)."""

    def forward(self, x, scale=None, shift=None):
        y = torch.nn.functional.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        if scale is not None:
            y = y * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
        return torch.nn.functional.silu(y) if self.act == "silu" else y


class _TorchSpatialSelfAttention(torch.nn.Module):
    """SpatialSelfAttention's function with torch's scaled_dot_product_attention."""

    def forward(self, x):
        B, C, H, W = x.shape
        h = self.group_norm(x) if self.group_norm is not None else x
        h = h.reshape(B, C, H * W).transpose(1, 2)
        q, k, v = (p(h).view(B, H * W, self.heads, -1).transpose(1, 2) for p in (self.to_q, self.to_k, self.to_v))
        o = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=self.scale)
        o = self.to_out[0](o.transpose(1, 2).reshape(B, H * W, C))
        return (o.transpose(1, 2).reshape(B, C, H, W) + x) / self.rescale_output_factor


def _with_torch_ops(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model` whose fused GroupNorm+SiLU and spatial attention are plain PyTorch (same weights)."""
    from .models.blocks import SpatialSelfAttention
    from .nn import GroupNormSiLU
    plain = copy.deepcopy(model)
    for m in plain.modules():
        if type(m) is GroupNormSiLU:
            m.__class__ = _TorchGroupNormSiLU
        elif type(m) is SpatialSelfAttention:
            m.__class__ = _TorchSpatialSelfAttention
    return plain


def _ae_setup(name: str, preset: str, batch: int, pass_: str, device):
    def setup(names):
        from . import models
        torch.manual_seed(0)
        model = models.build(name, preset).to(device)
        g = torch.Generator().manual_seed(0)
        c = model.config
        x = (torch.rand(batch, c.in_channels, c.image_size, c.image_size, generator=g) * 2 - 1).to(device)
        z = torch.randn(batch, *model.latent_shape, generator=g).to(device)
        if name == "vqvae":
            model({"image": x})                         # the codebook's one-time k-means++ initialisation
            z = model.encode(x).detach()                # decode() quantises pre-quantisation latents
        plain = _with_torch_ops(model)
        out = {}
        for impl in names:
            m = plain if impl in (EAGER, COMPILE) else model
            if pass_ == "fwd+bwd":
                m.train()
                params = [p for p in m.parameters() if p.requires_grad]
                loss_fn = lambda x, m=m: m({"image": x})[0]  # noqa: E731
                if impl == COMPILE:
                    torch._dynamo.reset()
                    loss_fn = torch.compile(loss_fn, dynamic=False)

                def step(loss_fn=loss_fn, params=params):
                    return torch.autograd.grad(loss_fn(x), params)
                fn = step
            else:
                m.eval()
                fn = m.decode
                if impl == COMPILE:
                    torch._dynamo.reset()
                    fn = torch.compile(fn, dynamic=False)
                fn = make_pass(fn, [z])
            if impl not in (EAGER, COMPILE):
                fn = _on_backend(fn, backend_of(impl))
            out[impl] = fn
        return out
    return setup


def _on_backend(fn, backend):
    from .backend import use_backend

    def run():
        with use_backend(backend):
            return fn()
    return run


def _ae_cases(name: str, device: torch.device, quick: bool) -> List[Case]:
    from . import models
    out = []
    for preset, batch in list(AE_CASES.items())[:1 if quick else None]:
        cfg = models.make_config(name, preset)
        batch = batch or cfg.batch_size
        with torch.device("meta"):
            meta = models.build(name, preset)
        params = sum(p.numel() * 4 for p in meta.parameters())
        x_shape = (batch, cfg.in_channels, cfg.image_size, cfg.image_size)
        x_bytes = 4 * math.prod(x_shape)
        for pass_, label in (("fwd+bwd", "train_step"), ("fwd", "decode")):
            # bytes: the weights read once (and their gradients written once for a step) plus the images
            nbytes = params * (3 if pass_ == "fwd+bwd" else 1) + 2 * x_bytes
            out.append(Case(name, f"{label}_{preset}", torch.float32, "nchw", pass_, device, nbytes, x_bytes,
                            _ae_setup(name, preset, batch, pass_, device), impl_names(device, reference=True),
                            {"model": name, "preset": preset, "batch": batch, "image": list(x_shape[1:])}))
    return out


for _name in ("autoencoder", "vae", "vqvae"):
    register(_name)(lambda device, quick, reference, _name=_name: _ae_cases(_name, device, quick))
