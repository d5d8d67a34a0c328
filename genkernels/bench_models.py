"""End-to-end benchmark cases of the models in genkernels.models (``genkernels bench --ops <name>``).

Each model section registers its cases with :func:`genkernels.benchkit.register`: the model's hot
path with its fused ops (``genkernels[b]``, per available backend, ``reference`` included) against the
same weights in plain PyTorch (``eager``) and ``torch.compile`` of that (``compile``). Random weights
built from the model's config; nothing is downloaded. Sections are appended per model.
"""
from __future__ import annotations

import copy
import math
from typing import List, Tuple

import torch

from .benchkit import COMPILE, EAGER, Case, backend_of, impl_names, make_pass, register


# ------------------------------------------------------------------------------------------ CycleGAN
# The authors' resnet_9blocks generator (ngf 64, 11.4 M parameters, 18 + 6 instance norms) on one 256x256
# RGB image, forward only. Impls: ``eager`` / ``compile``: the same weights with torch's own
# ``nn.InstanceNorm2d`` (plain PyTorch, and ``torch.compile`` of it); ``genkernels[b]``: the model as
# written (instance norms on the fused kernels) on backend b. ``--quick``: 128x128.


def _cyclegan_generator(device):
    from .models.cyclegan import ResnetGenerator
    from .models.gan_layers import init_normal_
    torch.manual_seed(0)
    return init_normal_(ResnetGenerator(3, 3, ngf=64, n_blocks=9)).to(device).eval()


def _with_torch_norms(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of `module` whose genkernels instance norms are torch's own (same parameters, same function)."""
    from .nn import InstanceNorm2d
    copy_ = copy.deepcopy(module)
    for m in copy_.modules():
        if type(m) is InstanceNorm2d:
            m.__class__ = torch.nn.InstanceNorm2d
    return copy_


def _cyclegan_setup(device, size):
    def setup(names):
        gen = _cyclegan_generator(device)
        x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device) * 2 - 1
        plain = _with_torch_norms(gen)
        out = {}
        for name in names:
            if name == EAGER:
                out[name] = make_pass(plain, [x])
            elif name == COMPILE:
                torch._dynamo.reset()
                out[name] = make_pass(torch.compile(plain, dynamic=False), [x])
            else:
                out[name] = make_pass(gen, [x], backend=backend_of(name))
        return out
    return setup


@register("cyclegan")
def _cyclegan_cases(device: torch.device, quick: bool, reference: bool) -> List[Case]:
    """CycleGAN's generator forward at 256x256 (batch 1, float32): fused vs reference vs torch.compile.
    bytes_moved: the weights and the input and output image (a lower bound)."""
    size = 128 if quick else 256
    x_bytes = 4 * 3 * size * size
    params = sum(p.numel() * 4 for p in _cyclegan_generator("meta").parameters())
    return [Case("cyclegan", f"generator_{size}", torch.float32, "nchw", "fwd", device, params + 2 * x_bytes,
                 x_bytes, _cyclegan_setup(device, size), impl_names(device, reference=True),
                 {"model": "cyclegan resnet_9blocks", "batch": 1})]


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


# ------------------------------------------------------------------------------------------ UNet (SD 1.5)
# One denoising step of Stable Diffusion 1.5's UNet architecture on batch 2 ([uncond; cond] of CFG) with
# 77 text tokens of 768 channels, and a whole 20-step DDIM + CFG sampling loop. Impls: ``eager`` /
# ``compile``: diffusers' own UNet2DConditionModel with the same weights (plain PyTorch, and
# torch.compile of it), the loop with diffusers' DDIMScheduler and guidance written as its pipelines do;
# ``genkernels[b]``: genkernels.models.unet on backend b, the loop with genkernels.nn.DDIMScheduler
# (guidance fused into the step). GPU: full width, 64x64 latents, float16. CPU: the same architecture at
# reduced width (keeping SD 1.5's attention head sizes) and latent size, float32.
UNET_TOKENS, UNET_STEPS, UNET_GUIDANCE = 77, 20, 7.5


def _unet_shape(device, loop: bool):
    """(UNet config, latent size, dtype) of the cases on `device`."""
    from .models.unet import SD15_UNET
    if device.type == "cuda":
        return dict(SD15_UNET), 64, torch.float16
    # half width with SD 1.5's head sizes (40, 80, 160): 4 heads per level (at quarter width the first level's
    # 80 channels would not divide into SD's 32 groups); the loop on 8x8 latents, the step on 16x16
    cfg = dict(SD15_UNET, block_out_channels=(160, 320, 640, 640), attention_head_dim=4)
    return cfg, 8 if loop else 16, torch.float32


def _unet_bytes(cfg, size, dtype) -> Tuple[int, int]:
    """(bytes of the UNet's weights, bytes of a batch-2 latent input) of the cases' UNet."""
    from .models.unet import UNet, UNetConfig
    with torch.device("meta"):
        params = sum(p.numel() for p in UNet(UNetConfig(**cfg)).parameters()) * dtype.itemsize
    return params, 2 * cfg["in_channels"] * size * size * dtype.itemsize


def _diffusers_unet(cfg, device, dtype):
    """diffusers' UNet2DConditionModel of `cfg` with the cases' random weights."""
    from diffusers import UNet2DConditionModel
    torch.manual_seed(0)
    return UNet2DConditionModel(**cfg).to(device=device, dtype=dtype).eval()


def _unet_pair(cfg, device, dtype):
    """(diffusers UNet2DConditionModel, ours) with the same random weights."""
    from .models.unet import load_diffusers_unet
    theirs = _diffusers_unet(cfg, device, dtype)
    return theirs, load_diffusers_unet(theirs)


def _unet_inputs(cfg, size, device, dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, cfg["in_channels"], size, size, generator=g).to(device, dtype)
    ctx = torch.randn(2, UNET_TOKENS, cfg["cross_attention_dim"], generator=g).to(device, dtype)
    return x, torch.tensor(500, device=device), ctx


def _unet_step_setup(device):
    def setup(names):
        cfg, size, dtype = _unet_shape(device, loop=False)
        theirs, ours = _unet_pair(cfg, device, dtype)
        x, t, ctx = _unet_inputs(cfg, size, device, dtype)
        out = {}
        for name in names:
            if name == EAGER:
                out[name] = make_pass(lambda a, b, c: theirs(a, b, c).sample, [x, t, ctx])
            elif name == COMPILE:
                torch._dynamo.reset()
                compiled = torch.compile(theirs, dynamic=False)
                out[name] = make_pass(lambda a, b, c: compiled(a, b, c).sample, [x, t, ctx])
            else:
                out[name] = make_pass(ours, [x, t, ctx], backend=backend_of(name))
        return out
    return setup


def _cfg_loop_diffusers(unet, sched, x, ctx):
    sched.set_timesteps(UNET_STEPS)
    for t in sched.timesteps:
        uncond, cond = unet(torch.cat([x, x]), t, ctx).sample.chunk(2)
        x = sched.step(uncond + UNET_GUIDANCE * (cond - uncond), t, x).prev_sample
    return x


def _cfg_loop_ours(unet, sched, x, ctx):
    sched.set_timesteps(UNET_STEPS)
    with unet.cached_context():   # the text embeddings' keys / values projected once per call
        for t in sched.timesteps:
            x = sched.step(unet(torch.cat([x, x]), t, ctx), t, x, guidance_scale=UNET_GUIDANCE).prev_sample
    return x


def _unet_loop_setup(device):
    def setup(names):
        import diffusers
        from .nn import DDIMScheduler
        cfg, size, dtype = _unet_shape(device, loop=True)
        theirs, ours = _unet_pair(cfg, device, dtype)
        x, _, ctx = _unet_inputs(cfg, size, device, dtype)
        x = x[:1]
        sd = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                  set_alpha_to_one=False, steps_offset=1)
        out = {}
        for name in names:
            if name in (EAGER, COMPILE):
                unet = theirs
                if name == COMPILE:
                    torch._dynamo.reset()
                    unet = torch.compile(theirs, dynamic=False)
                sched = diffusers.DDIMScheduler(**sd)
                out[name] = make_pass(lambda a, c, u=unet, s=sched: _cfg_loop_diffusers(u, s, a, c), [x, ctx])
            else:
                sched = DDIMScheduler(**sd)
                out[name] = make_pass(lambda a, c, s=sched: _cfg_loop_ours(ours, s, a, c), [x, ctx],
                                      backend=backend_of(name))
        return out
    return setup


# SD 1.5's VAE decode (one image): diffusers' AutoencoderKL (eager, torch.compile) vs
# genkernels.models.vae loaded from it. GPU: full width, 64x64 latents, float16; CPU: half width, 16x16, float32.
def _vae_shape(device):
    """(decoder widths, latent size, dtype) of the decode case on `device`."""
    if device.type == "cuda":
        return (128, 256, 512, 512), 64, torch.float16
    return (64, 128, 256, 256), 16, torch.float32


def _vae_decode_setup(device):
    def setup(names):
        from .bench_patch import _Decoder, sd_vae
        from .models.vae import load_diffusers_vae
        width, size, dtype = _vae_shape(device)
        theirs = sd_vae(width, size).to(device=device, dtype=dtype)
        ours = load_diffusers_vae(theirs).to(device=device, dtype=dtype).eval()
        z = torch.randn(1, 4, size, size, generator=torch.Generator().manual_seed(0)).to(device, dtype)
        out = {}
        for name in names:
            if name in (EAGER, COMPILE):
                dec = _Decoder(theirs)
                if name == COMPILE:
                    torch._dynamo.reset()
                    dec = torch.compile(dec, dynamic=False)
                out[name] = make_pass(dec, [z])
            else:
                out[name] = make_pass(ours.decode, [z], backend=backend_of(name))
        return out
    return setup


@register("unet")
def _unet_cases(device: torch.device, quick: bool, reference: bool) -> List[Case]:
    """SD 1.5's UNet: one denoising step at batch 2 with 77 tokens, and a 20-step DDIM + CFG loop
    (diffusers eager and torch.compile vs genkernels.models.unet per backend); its VAE's decode."""
    from .bench_patch import sd_vae
    out = []
    # On the CPU the loop and the decode time diffusers eager against ours only (no torch.compile, no
    # reference): with every impl the full run did not finish on a shared 2-core machine; the step has all.
    fused = [n for n in impl_names(device) if n not in (EAGER, COMPILE)]
    few = [EAGER] + fused if device.type == "cpu" else impl_names(device, reference=True)
    for loop in ((False,) if quick else (False, True)):
        cfg, size, dtype = _unet_shape(device, loop)
        params, x_bytes = _unet_bytes(cfg, size, dtype)
        width = "x".join(map(str, cfg["block_out_channels"]))
        if loop:
            out.append(Case("unet", f"ddim_cfg_{UNET_STEPS}steps_1x4x{size}x{size}", dtype, f"width {width}", "fwd",
                            device, UNET_STEPS * params, x_bytes, _unet_loop_setup(device), few,
                            {"model": "sd15 unet", "steps": UNET_STEPS, "guidance": UNET_GUIDANCE}))
        else:
            out.append(Case("unet", f"step_2x4x{size}x{size}_ctx{UNET_TOKENS}", dtype, f"width {width}", "fwd",
                            device, params + 2 * x_bytes, x_bytes, _unet_step_setup(device),
                            impl_names(device, reference=True), {"model": "sd15 unet", "batch": 2}))
    if not quick:
        widths, size, dtype = _vae_shape(device)
        with torch.device("meta"):
            params = sum(p.numel() for p in sd_vae(widths, size).decoder.parameters()) * dtype.itemsize
        image_bytes = 3 * (8 * size) ** 2 * dtype.itemsize
        out.append(Case("unet", f"vae_decode_1x4x{size}x{size}", dtype, "width " + "x".join(map(str, widths)), "fwd",
                        device, params + image_bytes, image_bytes, _vae_decode_setup(device), few,
                        {"model": "sd15 vae", "batch": 1}))
    return out


# ------------------------------------------------------------------------------------------ StyleGAN
# The synthesis network forward (batch 2 on CPU, 8 on CUDA; styles given, constant noise) at 64x64 and
# 256x256, and training steps at 64x64 with the lazy regularisers due (step 0): the critic phase with R1
# alone (``train_step_r1``), and both phases (``train_step_r1_pl``: R1, then the generator phase with path
# length, i.e. adain's double backward, which torch.compile cannot run), gradients of every parameter
# (the optimizer update is left out). The paper's channels (min(512, 16384 / resolution), 512-d z and w)
# on CUDA, 1/8 of them on CPU. Impls: ``eager`` / ``compile``: the same weights with AdaIN written in
# plain PyTorch (instance_norm * scale + bias, and torch.compile of it); ``genkernels[b]``: the model as
# written (adain op) on backend b.
STYLEGAN_SIZES = (64, 256)


def stylegan_config(image_size: int, device):
    from .models.stylegan import StyleGANConfig
    div = 1 if torch.device(device).type == "cuda" else 8
    sizes = [4 * 2 ** i for i in range(int(math.log2(image_size)) - 1)]
    return StyleGANConfig(data="photos", in_channels=3, image_size=image_size, z_dim=512 // div,
                          w_dim=512 // div, channels=tuple(min(512, 16384 // s) // div for s in sizes),
                          batch_size=8 if div == 1 else 2)


def _torch_adain_class():
    from .models.gan_layers import StyleAdaIN

    class _TorchStyleAdaIN(StyleAdaIN):
        """StyleAdaIN with the normalisation in plain PyTorch (the eager baseline)."""

        def forward(self, x, w):
            scale, bias = self.affine(w).chunk(2, dim=1)
            return torch.nn.functional.instance_norm(x, eps=1e-5) * scale[:, :, None, None] + bias[:, :, None, None]
    return _TorchStyleAdaIN


def _with_torch_adain(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model` whose AdaIN layers are plain PyTorch (same weights)."""
    from .models.gan_layers import StyleAdaIN
    cls = _torch_adain_class()
    plain = copy.deepcopy(model)
    for m in plain.modules():
        if type(m) is StyleAdaIN:
            m.__class__ = cls
    return plain


def _stylegan_setup(size: int, pass_: str, device, phases=("d", "g")):
    def setup(names):
        from .models.stylegan import StyleGAN
        cfg = stylegan_config(size, device)
        torch.manual_seed(0)
        model = StyleGAN(cfg).to(device)
        g = torch.Generator().manual_seed(0)
        plain = _with_torch_adain(model)
        out = {}
        for impl in names:
            m = plain if impl in (EAGER, COMPILE) else model
            if pass_ == "fwd":
                m.eval()
                ws = m.generator.ws(torch.randn(cfg.batch_size, cfg.z_dim, generator=g).to(device)).detach()
                synth = m.generator.synthesis
                if impl == COMPILE:
                    torch._dynamo.reset()
                    synth = torch.compile(synth, dynamic=False)
                fn = make_pass(lambda ws, synth=synth: synth(ws, "const"), [ws])
            else:
                m.train()
                x = (torch.rand(cfg.batch_size, cfg.in_channels, size, size, generator=g) * 2 - 1).to(device)
                params = [p for p in m.parameters() if p.requires_grad]
                net = m
                if impl == COMPILE:
                    torch._dynamo.reset()
                    net = torch.compile(m, dynamic=False)

                def step(net=net, x=x, params=params):
                    torch.manual_seed(0)
                    grads = []
                    for phase in phases:
                        loss, _ = net({"image": x}, phase=phase, step=0)
                        grads += torch.autograd.grad(loss, [p for p in params if p.requires_grad],
                                                     allow_unused=True)
                    return grads
                fn = step
            if impl not in (EAGER, COMPILE):
                fn = _on_backend(fn, backend_of(impl))
            out[impl] = fn
        return out
    return setup


@register("stylegan")
def _stylegan_cases(device: torch.device, quick: bool, reference: bool) -> List[Case]:
    """StyleGAN synthesis forward at 64x64 and 256x256; training steps at 64x64 (R1; R1 and path length)."""
    from .models.stylegan import StyleGAN
    out = []
    for size in STYLEGAN_SIZES[:1 if quick else None]:
        cfg = stylegan_config(size, device)
        with torch.device("meta"):
            meta = StyleGAN(cfg)
        x_shape = (cfg.batch_size, cfg.in_channels, size, size)
        x_bytes = 4 * math.prod(x_shape)
        synth = sum(p.numel() * 4 for p in meta.generator.synthesis.parameters())
        info = {"model": "stylegan", "channels": list(cfg.channels), "batch": cfg.batch_size}
        out.append(Case("stylegan", f"synthesis_{size}", torch.float32, "nchw", "fwd", device, synth + x_bytes,
                        x_bytes, _stylegan_setup(size, "fwd", device), impl_names(device, reference=True), info))
        if size == 64:
            params = sum(p.numel() * 4 for p in meta.parameters())
            for name, phases in (("r1", ("d",)), ("r1_pl", ("d", "g"))):
                out.append(Case("stylegan", f"train_step_{name}_{size}", torch.float32, "nchw", "fwd+bwd", device,
                                3 * params + 2 * x_bytes, x_bytes, _stylegan_setup(size, "train", device, phases),
                                impl_names(device, reference=True), info))
    return out
