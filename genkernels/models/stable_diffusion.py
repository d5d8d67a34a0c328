"""Stable Diffusion (Rombach et al. 2022): latent diffusion (ldm.py) conditioned on text through a CLIP
text encoder (clip.py) and the UNet's cross-attention, sampled with classifier-free guidance fused into
the DDIM step.

    m = genkernels.models.build("stable_diffusion", preset="digits")       # trained from scratch on captions
    images = m.text_to_image(["a handwritten seven"], guidance_scale=3.0, generator=g)   # [-1, 1]
    m = StableDiffusion.from_diffusers(pipe)          # the components of a diffusers StableDiffusionPipeline
    m = StableDiffusion.from_pretrained("sd15/")      # a local SD 1.5 folder (diffusers layout), offline

Pipeline (as diffusers' StableDiffusionPipeline): prompts -> tokenizer (bos, tokens, eos, padding;
truncated to the context) -> text encoder -> ``last_hidden_state``; the negative prompts ("" by
default) the same way; latents ~ N(0, I) from the generator; per DDIM step the UNet runs once on the
batched [x; x] with [negative; prompt] embeddings, and ``DDIMScheduler.step(guidance_scale=w)`` fuses
``uncond + w (cond - uncond)`` into the one ``ddim_step`` kernel; finally ``vae.decode(z / scaling_factor)``.
With w = 1 the unconditional half is skipped (the conditional model alone). Unlike diffusers, a w in
[0, 1) still guides (w = 0: the unconditional model); diffusers turns guidance off for every w <= 1.

Training (from scratch on digits with captions): the autoencoder stage of ldm.py, then the UNet and the
text encoder together on the latents, each caption replaced by the empty prompt with probability
``p_uncond`` (so one network learns the conditional and the unconditional prediction).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Union

import torch

from .. import data, metrics
from .clip import CLIPTextConfig, CLIPTextEncoder, load_clip_text_encoder
from .ldm import LDM, LDMConfig, TINY as LDM_TINY, DIGITS as LDM_DIGITS
from .tokenizer import CLIPBPETokenizer, load_tokenizer
from .unet import UNetConfig

Tensor = torch.Tensor
Prompts = Union[str, Sequence[str]]


@dataclass
class StableDiffusionConfig(LDMConfig):
    # the text encoder (CLIPTextConfig fields); the vocabulary comes from the tokenizer
    tokenizer_path: Optional[str] = None     # a folder with CLIP's vocab.json + merges.txt; None: word level
    context_length: int = data.TOKEN_LENGTH
    text_hidden_size: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_intermediate_size: int = 128
    text_hidden_act: str = "quick_gelu"
    # classifier-free guidance
    p_uncond: float = 0.1                    # probability of training on the empty prompt
    guidance: float = 3.0                    # default guidance scale of generate()

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.p_uncond <= 1:
            raise ValueError(f"StableDiffusionConfig: `p_uncond` must be in [0, 1], got {self.p_uncond}")
        if self.guidance < 0:
            raise ValueError(f"StableDiffusionConfig: `guidance` must be >= 0, got {self.guidance}")


TINY = dict(LDM_TINY, text_hidden_size=16, text_layers=1, text_heads=2, text_intermediate_size=32)
# ldm's digits preset with cross-attention at both levels and a 2-layer text encoder of width 32
DIGITS = dict(LDM_DIGITS, attention_levels=(True, True), text_hidden_size=32, text_layers=2, text_heads=2,
              text_intermediate_size=64)


class StableDiffusion(LDM):
    name = "stable_diffusion"
    description = "Stable Diffusion: CLIP text encoder + cross-attention UNet in a KL latent space, CFG fused into DDIM"
    Config = StableDiffusionConfig
    presets = {"tiny": TINY, "digits": DIGITS}
    sample_options = {
        **LDM.sample_options,
        "--prompt": dict(dest="prompt", action="append", help="a prompt (repeat for a batch); default: digit captions"),
        "--negative-prompt": dict(dest="negative_prompt", action="append", help="negative prompt(s), one per prompt"),
        "--guidance": dict(dest="guidance", type=float, help="guidance scale w (default: the config's)"),
        "--from-pretrained": dict(dest="from_pretrained", help="a local Stable Diffusion folder (diffusers layout)"),
        "--height": dict(dest="height", type=int, help="image height in pixels (a multiple of the VAE factor)"),
        "--width": dict(dest="width", type=int, help="image width in pixels (a multiple of the VAE factor)"),
    }

    def __init__(self, config: StableDiffusionConfig, *, text_encoder: Optional[CLIPTextEncoder] = None,
                 tokenizer: Any = None, **components: Any):
        self._tokenizer = tokenizer if tokenizer is not None else load_tokenizer(config.tokenizer_path,
                                                                                   config.context_length)
        super().__init__(config, **components)
        if text_encoder is None:
            t = self._tokenizer
            text_encoder = CLIPTextEncoder(CLIPTextConfig(
                vocab_size=t.vocab_size, hidden_size=config.text_hidden_size, intermediate_size=config.text_intermediate_size,
                num_hidden_layers=config.text_layers, num_attention_heads=config.text_heads,
                max_position_embeddings=t.context_length, hidden_act=config.text_hidden_act,
                eos_token_id=t.eos_token_id))
        self.text_encoder = text_encoder

    @property
    def tokenizer(self):
        return self._tokenizer

    def unet_config(self) -> UNetConfig:
        c = self.config
        down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in c.attention_levels)
        up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(c.attention_levels))
        mid = "UNetMidBlock2DCrossAttn" if c.attention_levels[-1] else "UNetMidBlock2D"
        return dataclasses.replace(super().unet_config(), cross_attention_dim=c.text_hidden_size,
                                   down_block_types=down, up_block_types=up, mid_block_type=mid)

    # ------------------------------------------------------------------ text
    def encode_prompt(self, prompts: Sequence[str]) -> Tensor:
        """The text encoder's last_hidden_state [len(prompts), context, hidden] of the tokenized prompts."""
        ids = self.tokenizer(list(prompts)).to(next(self.text_encoder.parameters()).device)
        return self.text_encoder(ids).last_hidden_state

    # ------------------------------------------------------------------ training
    def ema_modules(self):
        return ["unet", "text_encoder"]

    def diffusion_parameters(self):
        return list(self.unet.parameters()) + list(self.text_encoder.parameters())

    def condition(self, batch: Dict[str, Tensor]) -> Dict[str, Any]:
        """The captions' embeddings, each caption the empty prompt with probability p_uncond."""
        prompts = [data.caption(int(y)) for y in batch["label"]]
        drop = torch.rand(len(prompts)) < self.config.p_uncond
        return {"encoder_hidden_states": self.encode_prompt(["" if d else p for p, d in zip(prompts, drop.tolist())])}

    # ------------------------------------------------------------------ the pipeline
    def denoise(self, sched, x, t, generator, eta: Optional[float] = None, context: Tensor = None,
                guidance: float = 1.0, **options: Any):
        if guidance == 1.0:   # context holds the prompts only: the conditional model alone
            out = self.unet(x, t, encoder_hidden_states=context)
            return sched.step(out, t, x, eta=self._eta(eta), generator=generator).prev_sample
        out = self.unet(torch.cat([x, x]), t, encoder_hidden_states=context)   # [uncond; cond]
        return sched.step(out, t, x, eta=self._eta(eta), generator=generator, guidance_scale=guidance).prev_sample

    @torch.no_grad()
    def text_to_image(self, prompt: Prompts, negative_prompt: Optional[Prompts] = None, *,
                      num_images_per_prompt: int = 1, guidance_scale: Optional[float] = None,
                      num_inference_steps: Optional[int] = None, eta: Optional[float] = None,
                      generator: Optional[torch.Generator] = None, latents: Optional[Tensor] = None,
                      height: Optional[int] = None, width: Optional[int] = None, output_latents: bool = False
                      ) -> Tensor:
        """Images in [-1, 1], [len(prompt) * num_images_per_prompt, C, H, W] (prompt-major, as diffusers).
        negative_prompt: one per prompt (or one string for all); default the empty prompt."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise TypeError("stable_diffusion: `prompt` must be a string or a non-empty list of strings")
        if negative_prompt is None:
            negatives = [""] * len(prompts)
        else:
            negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt)
            if len(negatives) != len(prompts):
                raise ValueError(f"stable_diffusion: `negative_prompt` has {len(negatives)} entries but `prompt` has "
                                 f"{len(prompts)}; give one negative prompt per prompt (or a single string)")
        w = self.config.guidance if guidance_scale is None else float(guidance_scale)
        if not w >= 0:
            raise ValueError(f"stable_diffusion: `guidance_scale` must be >= 0, got {guidance_scale}")
        if num_images_per_prompt < 1:
            raise ValueError(f"stable_diffusion: `num_images_per_prompt` must be >= 1, got {num_images_per_prompt}")
        shape = self.latent_shape(height, width)
        n = len(prompts) * num_images_per_prompt
        if latents is not None and tuple(latents.shape) != (n, *shape):
            raise ValueError(f"stable_diffusion: `latents` must have shape {(n, *shape)}, got {tuple(latents.shape)}")
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        dtype = next(self.unet.parameters()).dtype
        cond = self.encode_prompt(prompts).repeat_interleave(num_images_per_prompt, 0)
        if w != 1.0:
            uncond = self.encode_prompt(negatives).repeat_interleave(num_images_per_prompt, 0)
            cond = torch.cat([uncond, cond])
        with self.unet.cached_context():   # the text's keys/values projected once for all steps
            return self.sample(n, generator, steps=num_inference_steps, latents=latents, height=height,
                               width=width, output_latents=output_latents, context=cond.to(dtype), guidance=w,
                               eta=eta)

    @torch.no_grad()
    def generate(self, num: int, generator: torch.Generator, prompt: Optional[Prompts] = None,
                 negative_prompt: Optional[Prompts] = None, guidance: Optional[float] = None,
                 steps: Optional[int] = None, eta: Optional[float] = None, from_pretrained: Optional[str] = None,
                 height: Optional[int] = None, width: Optional[int] = None, **options: Any) -> Tensor:
        """num images per prompt (`genkernels sample`); no prompt: the digits' captions 0, 1, ..., 9, 0, ...
        one image each. from_pretrained: sample from a local SD folder instead of this model's weights
        (`genkernels sample` has already loaded the model from it)."""
        if from_pretrained is not None and from_pretrained != getattr(self, "pretrained_path", None):
            return type(self).from_pretrained(from_pretrained).generate(
                num, generator, prompt=prompt, negative_prompt=negative_prompt, guidance=guidance, steps=steps,
                eta=eta, height=height, width=width)
        if prompt is None:
            prompt, per = [data.caption(i % 10) for i in range(num)], 1
        else:
            per = num
        return self.text_to_image(prompt, negative_prompt, num_images_per_prompt=per, guidance_scale=guidance,
                                  num_inference_steps=steps, eta=eta, generator=generator, height=height, width=width)

    @torch.no_grad()
    def evaluate(self, split: str = "test", num: int = 500, generator: Optional[torch.Generator] = None,
                 guidances=(1.0, 3.0, 5.0), **options: Any) -> Dict[str, Any]:
        """FD-digits / KID at the config's guidance, and the in-repo classifier's accuracy of the digit a
        prompt "a handwritten K" names, at each of `guidances` (floor: its held-out accuracy; ceiling: chance)."""
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        out = super().evaluate(split, num, generator, **options)
        n = out["num"]
        labels = torch.arange(n) % 10
        prompts = [data.caption(int(y)) for y in labels]
        out["accuracy"] = {}
        for w in guidances:
            images = self.text_to_image(prompts, guidance_scale=w, generator=generator, **options).float().cpu()
            acc = metrics.digits_accuracy(images, labels)
            out["accuracy"][str(w)] = metrics.bounds("digits_accuracy", acc, num=n, image_size=self.config.image_size)
        return out

    # ------------------------------------------------------------------ real weights
    @classmethod
    def from_diffusers(cls, pipe: Any) -> "StableDiffusion":
        """Ours with the components of a diffusers StableDiffusionPipeline (text_encoder, tokenizer, unet, vae,
        scheduler config): the same images for the same prompts, latents and scheduler. Eval mode."""
        from .unet import load_diffusers_unet
        from .vae import load_diffusers_vae
        for part in ("text_encoder", "tokenizer", "unet", "vae", "scheduler"):
            if getattr(pipe, part, None) is None:
                raise ValueError(f"StableDiffusion.from_diffusers: the pipeline has no {part}")
        text_encoder = load_clip_text_encoder(pipe.text_encoder)
        unet, vae = load_diffusers_unet(pipe.unet), load_diffusers_vae(pipe.vae)
        tok = _PipelineTokenizer(pipe.tokenizer)
        uc, vc, tc = unet.config, vae.config, text_encoder.config
        n_lvl = len(uc.block_out_channels)
        config = StableDiffusionConfig(
            data="photos", in_channels=vc.in_channels, image_size=uc.sample_size * 2 ** (len(vc.block_out_channels) - 1),
            ae_block_out_channels=vc.block_out_channels, ae_layers_per_block=vc.layers_per_block,
            latent_channels=vc.latent_channels, ae_norm_num_groups=vc.norm_num_groups,
            scaling_factor=vc.scaling_factor, block_out_channels=uc.block_out_channels,
            attention_levels=tuple(k.startswith("CrossAttn") for k in uc.down_block_types),
            attention_heads=uc.attention_head_dim if isinstance(uc.attention_head_dim, int) else uc.attention_head_dim[0],
            layers_per_block=uc.layers_per_block if isinstance(uc.layers_per_block, int) else uc.layers_per_block[0],
            norm_num_groups=uc.norm_num_groups, resnet_time_scale_shift=uc.resnet_time_scale_shift,
            num_train_timesteps=pipe.scheduler.config.num_train_timesteps,
            beta_schedule=pipe.scheduler.config.beta_schedule, beta_start=pipe.scheduler.config.beta_start,
            beta_end=pipe.scheduler.config.beta_end, prediction_type=pipe.scheduler.config.prediction_type,
            context_length=tok.context_length, text_hidden_size=tc.hidden_size, text_layers=tc.num_hidden_layers,
            text_heads=tc.num_attention_heads, text_intermediate_size=tc.intermediate_size,
            text_hidden_act=tc.hidden_act, guidance=7.5, sample_steps=50)
        assert n_lvl == len(config.block_out_channels)
        sched = {k: v for k, v in dict(pipe.scheduler.config).items() if not k.startswith("_")}
        m = cls(config, text_encoder=text_encoder, tokenizer=tok, unet=unet, vae=vae, scheduler_config=sched)
        return m.to(next(unet.parameters()).dtype).eval()

    @classmethod
    def from_pretrained(cls, path: str) -> "StableDiffusion":
        """From a local Stable Diffusion folder in diffusers' layout (model_index.json, text_encoder/,
        tokenizer/, unet/, vae/, scheduler/); nothing is downloaded."""
        if not os.path.isfile(os.path.join(path, "model_index.json")):
            raise ValueError(f"from_pretrained: {path!r} is not a diffusers pipeline folder (no model_index.json)")
        from diffusers import StableDiffusionPipeline
        pipe = StableDiffusionPipeline.from_pretrained(path, local_files_only=True, safety_checker=None,
                                                       requires_safety_checker=False)
        m = cls.from_diffusers(pipe)
        m.pretrained_path = path
        return m


class _PipelineTokenizer(CLIPBPETokenizer):
    """A diffusers pipeline's own CLIPTokenizer (already loaded), padded to its model_max_length."""

    def __init__(self, tok: Any):
        self.tok = tok
        self.context_length = int(tok.model_max_length)
        self.vocab_size = len(tok)
        self.bos_token_id, self.eos_token_id, self.pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
