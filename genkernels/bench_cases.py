"""Benchmark cases of the ops, registered with :mod:`genkernels.benchkit` (eager vs torch.compile vs
each genkernels backend on the shapes of the models that use them)."""
from __future__ import annotations

import math
from typing import Callable, List, Sequence

import torch
import torch.nn.functional as F

import genkernels

from .benchkit import COMPILE, EAGER, Case, backend_of, impl_names, make_pass, register, standard_impls

_NORM_EPS = 1e-5
_GPU_DTYPES = [torch.float16, torch.bfloat16, torch.float32]


def _nbytes(shape, dtype) -> int:
    return math.prod(shape) * torch.empty((), dtype=dtype).element_size()


def _norm_cases(op: str, shapes: Sequence[tuple], dtypes, device, quick: bool, reference: bool,
                param_shapes: Callable[[tuple], List[tuple]], torch_fn, gk_fn, extra=None) -> List[Case]:
    """fwd and fwd+bwd, NCHW and channels_last, of a normalisation op f(x, *params)."""
    if quick:
        shapes, dtypes = shapes[:1], dtypes[:1]
    names = impl_names(device, reference)
    out = []
    for dtype in dtypes:
        for shape in shapes:
            xbytes = _nbytes(shape, dtype)
            pbytes = sum(_nbytes(p, dtype) for p in param_shapes(shape))
            for layout in ("nchw", "channels_last"):
                for pass_ in ("fwd", "fwd+bwd"):
                    # fwd: read x, write y, read params; bwd adds read x and dy, write dx and param grads
                    fwd = 2 * xbytes + pbytes
                    nbytes = fwd if pass_ == "fwd" else fwd + 3 * xbytes + pbytes
                    setup = _norm_setup(shape, dtype, layout, pass_, device, param_shapes(shape), torch_fn, gk_fn)
                    out.append(Case(op, shape, dtype, layout, pass_, device, nbytes, xbytes, setup, names,
                                    dict(extra or {})))
    return out


def _norm_setup(shape, dtype, layout, pass_, device, param_shapes, torch_fn, gk_fn):
    def setup(names):
        g = torch.Generator().manual_seed(0)
        x = (torch.randn(shape, generator=g) * 2 + 0.5).to(device=device, dtype=dtype)
        params = [(1 + 0.1 * torch.randn(param_shapes[0], generator=g)).to(device=device, dtype=dtype)]
        params += [(0.1 * torch.randn(p, generator=g)).to(device=device, dtype=dtype) for p in param_shapes[1:]]
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        dy = None
        if pass_ == "fwd+bwd":
            for t in [x] + params:
                t.requires_grad_(True)
            dy = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
            if layout == "channels_last":
                dy = dy.contiguous(memory_format=torch.channels_last)
        return standard_impls(names, torch_fn, gk_fn, [x] + params, dy)
    return setup


@register("group_norm_silu")
def _group_norm_silu_cases(device: torch.device, quick: bool, reference: bool) -> List[Case]:
    """Stable Diffusion 1.5 UNet/VAE GroupNorm+SiLU shapes, G=32 (the largest scaled down on CPU)."""
    G = 32
    if device.type == "cuda":
        shapes = [(2, 320, 64, 64), (2, 640, 32, 32), (2, 1280, 16, 16), (1, 128, 256, 256)]
    else:
        shapes = [(2, 320, 64, 64), (2, 640, 32, 32), (2, 1280, 16, 16), (1, 128, 128, 128)]
    dtypes = _GPU_DTYPES if device.type == "cuda" else [torch.float32]
    return _norm_cases("group_norm_silu", shapes, dtypes, device, quick, reference,
                       lambda s: [(s[1],), (s[1],)],
                       lambda x, w, b: F.silu(F.group_norm(x, G, w, b, _NORM_EPS)),
                       lambda x, w, b: genkernels.group_norm_silu(x, G, w, b, _NORM_EPS),
                       {"num_groups": G})


@register("adain")
def _adain_cases(device: torch.device, quick: bool, reference: bool) -> List[Case]:
    """StyleGAN synthesis-network AdaIN shapes (batch 8); eager is instance_norm * s + b."""
    shapes = [(8, 512, 32, 32), (8, 512, 4, 4), (8, 512, 16, 16), (8, 512, 64, 64), (8, 256, 128, 128)]
    dtypes = _GPU_DTYPES if device.type == "cuda" else [torch.float32]
    return _norm_cases("adain", shapes, dtypes, device, quick, reference,
                       lambda s: [s[:2], s[:2]],
                       lambda x, s, b: F.instance_norm(x, eps=_NORM_EPS) * s[:, :, None, None] + b[:, :, None, None],
                       lambda x, s, b: genkernels.adain(x, s, b, _NORM_EPS))


def _eager_cfg_ddim(a_t, a_prev, s):
    """The step as diffusers writes it: chunk + guidance, then DDIMScheduler.step's epsilon update."""
    def fn(x, mo):
        u, c = mo.chunk(2)
        eps = u + s * (c - u)
        x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t ** 0.5
        return a_prev ** 0.5 * x0 + (1 - a_prev) ** 0.5 * eps, x0
    return fn


@register("ddim_step")
def _ddim_cases(device: torch.device, quick: bool, reference: bool) -> List[Case]:
    """One DDIM step with classifier-free guidance on SD latents and a video-sized latent (fwd only);
    the time per call is the time per step, and kernel launches per step are counted."""
    shapes = [(4, 4, 128, 128), (1, 4, 64, 64), (2, 4, 96, 96), (1, 16, 16, 128, 128)]
    dtypes = _GPU_DTYPES if device.type == "cuda" else [torch.float32]
    if quick:
        shapes, dtypes = shapes[:1], dtypes[:1]
    names = impl_names(device, reference)
    out = []
    for dtype in dtypes:
        for shape in shapes:
            xbytes = _nbytes(shape, dtype)
            # read sample + [uncond; cond] model output, write prev_sample + pred_original_sample
            out.append(Case("ddim_step", shape, dtype, "cfg", "fwd", device, 5 * xbytes, xbytes,
                            _ddim_setup(shape, dtype, device), names, {"guidance_scale": 7.5},
                            count_launches=True))
    return out


def _ddim_setup(shape, dtype, device, a_t=0.43, a_prev=0.61, s=7.5):
    def setup(names):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
        mo = torch.randn((2 * shape[0],) + tuple(shape[1:]), generator=g).to(device=device, dtype=dtype)
        # (inductor's C++ kernels are counted only when they report to the profiler)
        opts = {"cpp.enable_kernel_profile": True} if device.type == "cpu" else None
        return standard_impls(names, _eager_cfg_ddim(a_t, a_prev, s),
                              lambda x, mo: genkernels.ddim_step(x, mo, a_t, a_prev, guidance_scale=s), (x, mo),
                              compile_options=opts)
    return setup


def _naive_attention(q, k, v):
    return torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1) @ v


@register("attention")
def _attention_cases(device: torch.device, quick: bool, reference: bool) -> List[Case]:
    """SD 1.5 UNet attention, B = 2 (CFG), 8 heads: cross (text, Lk = 77) and self. The eager impl is
    F.scaled_dot_product_attention; `naive` (softmax(q kᵀ) v) is what torch.compile compiles."""
    if device.type == "cuda":
        cross = [(2, 8, 4096, 40), (2, 8, 1024, 80), (2, 8, 256, 160), (2, 8, 64, 160)]
        self_ = [(2, 8, 4096, 40), (2, 8, 1024, 80), (2, 8, 256, 160)]
        dtypes = [torch.bfloat16, torch.float16]
    else:
        cross = [(2, 8, 4096, 40), (2, 8, 1024, 80), (2, 8, 256, 160)]
        self_ = [(2, 8, 1024, 40), (2, 8, 256, 160)]
        dtypes = [torch.float32]
    shapes = [(s, 77, "cross") for s in cross] + [(s, s[2], "self") for s in self_]
    if quick:
        shapes, dtypes = shapes[:1], dtypes[:1]
    names = impl_names(device, reference)
    out = []
    for dtype in dtypes:
        for (B, H, Lq, d), Lk, kind in shapes:
            qbytes, kvbytes = _nbytes((B, H, Lq, d), dtype), _nbytes((B, H, Lk, d), dtype)
            for pass_ in ("fwd", "fwd+bwd"):
                # fwd: read q, k, v, write out; bwd adds read q, k, v, out, dout and write dq, dk, dv
                fwd = 2 * qbytes + 2 * kvbytes
                nbytes = fwd if pass_ == "fwd" else fwd + 4 * qbytes + 4 * kvbytes
                # fwd: q kᵀ and p v, 2 Lq Lk d FLOPs each; bwd adds dv, dp, dq and dk
                flops = (2 if pass_ == "fwd" else 6) * 2 * B * H * Lq * Lk * d
                out.append(Case("attention", (B, H, Lq, d), dtype, f"{kind} Lk={Lk}", pass_, device, nbytes,
                                qbytes, _attention_setup((B, H, Lq, d), Lk, dtype, pass_, device), names,
                                flops=flops))
    return out


def _attention_setup(qshape, Lk, dtype, pass_, device):
    def setup(names):
        g = torch.Generator().manual_seed(0)
        B, H, Lq, d = qshape
        q = torch.randn(qshape, generator=g).to(device=device, dtype=dtype)
        k = torch.randn((B, H, Lk, d), generator=g).to(device=device, dtype=dtype)
        v = torch.randn((B, H, Lk, d), generator=g).to(device=device, dtype=dtype)
        dy = None
        if pass_ == "fwd+bwd":
            for t in (q, k, v):
                t.requires_grad_(True)
            dy = torch.randn(qshape, generator=g).to(device=device, dtype=dtype)
        impls = standard_impls([n for n in names if n != "compile"], F.scaled_dot_product_attention,
                               genkernels.attention, (q, k, v), dy)
        if "compile" in names:
            impls["compile"] = standard_impls(["compile"], _naive_attention, None, (q, k, v), dy)["compile"]
        return impls
    return setup


# ------------------------------------------------------------------------------------------- vq
VQ_TOKENS = 16 * 32 * 32
CDIST, VQP = "cdist", "vector-quantize-pytorch"


def _vq_matmul_form(z, e):
    d = z.square().sum(1, keepdim=True) - 2 * (z @ e.t()) + e.square().sum(1)
    return d.argmin(1)


def _vq_cdist(z, e):
    return torch.cdist(z, e).argmin(1)


def _have_vqp() -> bool:
    try:
        import vector_quantize_pytorch  # noqa: F401
    except Exception:
        return False
    return True


def vq_impl_names(device, reference: bool = False) -> List[str]:
    """eager (matmul form, M x K matrix), compile of it, cdist + argmin, vector-quantize-pytorch's layer
    (when installed: its own cdist + argmax + gather, eval mode) and each genkernels backend."""
    names = impl_names(device, reference)
    return names[:2] + [CDIST] + ([VQP] if _have_vqp() else []) + names[2:]


def vq_impls(names, M, K, D, dtype, device):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(M, D, generator=g).to(device=device, dtype=dtype)
    e = torch.randn(K, D, generator=g).to(device=device, dtype=dtype)
    out = {}
    for name in names:
        if name in (EAGER, COMPILE):
            out.update(standard_impls([name], _vq_matmul_form, None, (z, e)))
        elif name == CDIST:
            out[name] = make_pass(_vq_cdist, (z, e))
        elif name == VQP:
            from vector_quantize_pytorch import VectorQuantize

            vq = VectorQuantize(dim=D, codebook_size=K).to(device=device, dtype=dtype).eval()
            with torch.no_grad():
                vq._codebook.embed.copy_(e[None])
            out[name] = make_pass(lambda x: vq(x), (z[None],))
        else:
            out[name] = make_pass(lambda z, e: genkernels.vq_nearest(z, e), (z, e), backend=backend_of(name))
    return out


@register("vq_nearest")
def _vq_cases(device: torch.device, quick: bool, reference: bool) -> List[Case]:
    """VQ-VAE quantizer lookups: M = 16 x 32 x 32 tokens, K in {512, 1024, 8192, 16384}, D in {4, 64, 256};
    on CPU without K >= 8192 at D = 256 (34 / 69 GMAC: minutes per impl). Peak extra memory measured."""
    Ks, Ds = (512, 1024, 8192, 16384), (4, 64, 256)
    if device.type == "cuda":
        dtypes = [torch.float32, torch.float16, torch.bfloat16]
        shapes = [(K, D) for K in Ks for D in Ds]
    else:
        dtypes = [torch.float32]
        shapes = [(K, D) for K in Ks for D in Ds if not (K >= 8192 and D == 256)]
    if quick:
        dtypes, shapes = dtypes[:1], [(1024, 64)]
    names = vq_impl_names(device, reference)
    out = []
    for dtype in dtypes:
        es = torch.empty((), dtype=dtype).element_size()
        for K, D in shapes:
            M = VQ_TOKENS
            nbytes = (M + K) * D * es + M * (8 + 4)  # read z, codebook; write indices, distances
            out.append(Case("vq_nearest", (M, K, D), dtype, "rows", "fwd", device, nbytes, M * D * es,
                            _vq_setup(M, K, D, dtype, device), names,
                            {"M": M, "K": K, "D": D}, peak_memory=True, flops=2 * M * K * D))
    return out


def _vq_setup(M, K, D, dtype, device):
    def setup(names):
        return vq_impls(names, M, K, D, dtype, device)
    return setup
