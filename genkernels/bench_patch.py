"""Benchmark cases of ``genkernels.patch`` on diffusers models (``genkernels bench --ops patch``).

Stable Diffusion 1.5's architecture (random weights, built from configs, nothing downloaded): the UNet
denoising step of ``--ops unet`` (genkernels/bench_models.py: batch 2 = [uncond; cond], 77 text tokens;
half width, 16 x 16 latents, float32 on the CPU; full width, 64 x 64, float16 on a GPU), a VAE decode
(1/4 width, 16 x 16 latents) and a 20-step StableDiffusionPipeline call (prompt embeddings given,
classifier-free guidance; a smaller UNet and VAE, so that the impls x 10 calls fit in minutes on a CPU).
Impls: ``eager`` (diffusers as is), ``compile`` (``torch.compile`` of diffusers' module),
``genkernels.patch`` (patched, eager) and ``genkernels.patch+compile``. ``bytes_moved`` is the size of
the weights (read at least once per call). diffusers is imported only when the cases are built.
"""
from __future__ import annotations

import copy
from typing import Dict, List

import torch

from . import bench_models as bm
from .benchkit import COMPILE, EAGER, Case, register

PATCHED, PATCHED_COMPILE = "genkernels.patch", "genkernels.patch+compile"
NAMES = [EAGER, COMPILE, PATCHED, PATCHED_COMPILE]

# SD 1.5's VAE at 1/4 of its width; the pipeline's UNet (4 levels, 2 ResNets a level, 8 heads, 768-d text)
# and VAE at 1/8
VAE_WIDTH = (32, 64, 128, 128)
LATENT = 16
TOKENS, TEXT_DIM = 77, 768
PIPE_UNET_WIDTH, PIPE_VAE_WIDTH, PIPE_LATENT = (32, 64, 128, 128), (32, 32, 64, 64), 16


def sd_unet(width, latent=LATENT):
    from diffusers import UNet2DConditionModel
    torch.manual_seed(0)
    return UNet2DConditionModel(sample_size=latent, block_out_channels=width, layers_per_block=2,
                                cross_attention_dim=TEXT_DIM, attention_head_dim=8, norm_num_groups=32).eval()


def sd_vae(width=VAE_WIDTH, latent=LATENT):
    from diffusers import AutoencoderKL
    torch.manual_seed(1)
    return AutoencoderKL(block_out_channels=width, layers_per_block=2, latent_channels=4, norm_num_groups=32,
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         sample_size=latent * 8).eval()


def _variants(module: torch.nn.Module, names) -> Dict[str, torch.nn.Module]:
    """{impl: module}: diffusers' module itself, or a patched copy (weights copied once, here)."""
    import genkernels
    out = {}
    for name in names:
        m = module if name in (EAGER, COMPILE) else copy.deepcopy(module)
        if name in (PATCHED, PATCHED_COMPILE):
            genkernels.patch(m)
        if name in (COMPILE, PATCHED_COMPILE):
            torch._dynamo.reset()
            m = torch.compile(m, dynamic=False)
        out[name] = m
    return out


def _no_grad(fn):
    def run():
        with torch.no_grad():
            return fn()
    return run


def _unet_setup(device):
    """The UNet step of ``--ops unet`` (its config, weights and inputs), diffusers' UNet per impl."""
    def setup(names):
        cfg, size, dtype = bm._unet_shape(device, loop=False)
        x, t, ctx = bm._unet_inputs(cfg, size, device, dtype)
        return {n: _no_grad(lambda m=m: m(x, t, ctx, return_dict=False)[0])
                for n, m in _variants(bm._diffusers_unet(cfg, device, dtype), names).items()}
    return setup


def _vae_setup(device):
    def setup(names):
        z = torch.randn(1, 4, LATENT, LATENT, generator=torch.Generator().manual_seed(0)).to(device)
        return {n: _no_grad(lambda m=m: m(z)) for n, m in _variants(_Decoder(sd_vae().to(device)), names).items()}
    return setup


class _Decoder(torch.nn.Module):
    """The VAE's decode as a module, so that torch.compile and patch see one model."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, z):
        return self.vae.decode(z, return_dict=False)[0]


def _pipeline_setup(device, steps):
    def setup(names):
        from diffusers import DDIMScheduler, StableDiffusionPipeline
        from transformers import CLIPTextConfig, CLIPTextModel

        import genkernels
        torch.manual_seed(2)
        text = CLIPTextModel(CLIPTextConfig(hidden_size=TEXT_DIM, intermediate_size=64, num_attention_heads=8,
                                            num_hidden_layers=1, vocab_size=64, max_position_embeddings=TOKENS))
        unet = sd_unet(PIPE_UNET_WIDTH, PIPE_LATENT).to(device)
        vae = sd_vae(PIPE_VAE_WIDTH, PIPE_LATENT).to(device)
        g = torch.Generator().manual_seed(0)
        emb = torch.randn(1, TOKENS, TEXT_DIM, generator=g).to(device)
        neg = torch.randn(1, TOKENS, TEXT_DIM, generator=g).to(device)
        latents = torch.randn(1, 4, PIPE_LATENT, PIPE_LATENT, generator=g).to(device)
        impls = {}
        for name in names:
            pipe = StableDiffusionPipeline(
                vae=copy.deepcopy(vae), text_encoder=text, tokenizer=None, unet=copy.deepcopy(unet),
                scheduler=DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                        clip_sample=False, set_alpha_to_one=False, steps_offset=1),
                safety_checker=None, feature_extractor=None, requires_safety_checker=False)
            pipe.set_progress_bar_config(disable=True)
            if name in (PATCHED, PATCHED_COMPILE):
                genkernels.patch(pipe)
            if name in (COMPILE, PATCHED_COMPILE):
                torch._dynamo.reset()
                pipe.unet = torch.compile(pipe.unet, dynamic=False)
                pipe.vae.decoder = torch.compile(pipe.vae.decoder, dynamic=False)
            impls[name] = _no_grad(lambda p=pipe: p(
                prompt_embeds=emb, negative_prompt_embeds=neg, latents=latents, num_inference_steps=steps,
                guidance_scale=7.5, output_type="pt", return_dict=False)[0])
        return impls
    return setup


def _param_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


@register("patch")
def _patch_cases(device: torch.device, quick: bool, reference: bool) -> List[Case]:
    """The UNet step and the VAE decode always; the 20-step pipeline call unless quick."""
    cfg, size, dtype = bm._unet_shape(device, loop=False)
    unet_bytes, unet_x_bytes = bm._unet_bytes(cfg, size, dtype)
    vae_bytes = _param_bytes(sd_vae().decoder)
    x_bytes = 2 * 4 * LATENT * LATENT * 4
    info = {"vae_width": list(VAE_WIDTH), "latent": LATENT}
    unet_info = {"unet_width": list(cfg["block_out_channels"]), "latent": size, "tokens": bm.UNET_TOKENS, "batch": 2}
    pipe_info = {"unet_width": list(PIPE_UNET_WIDTH), "vae_width": list(PIPE_VAE_WIDTH), "latent": PIPE_LATENT,
                 "tokens": TOKENS}
    pipe_bytes = 20 * _param_bytes(sd_unet(PIPE_UNET_WIDTH)) + _param_bytes(sd_vae(PIPE_VAE_WIDTH).decoder)
    out = [Case("patch", "unet_step", dtype, "sd15", "fwd", device, unet_bytes, unet_x_bytes,
                _unet_setup(device), NAMES, unet_info),
           Case("patch", "vae_decode", torch.float32, "sd15", "fwd", device, vae_bytes, x_bytes,
                _vae_setup(device), NAMES, dict(info, batch=1))]
    if not quick:
        out.append(Case("patch", "pipeline_20_steps", torch.float32, "sd15", "fwd", device,
                        pipe_bytes, x_bytes, _pipeline_setup(device, 20), NAMES,
                        dict(pipe_info, batch=1, steps=20, guidance_scale=7.5)))
    return out
