"""One small call of every op (forward and backward where it has one) for tools that need every kernel
to run once: compute-sanitizer in bench/gpu_check.sh and the sm_90 compile check
(tests/triton_sm90_build.py). Odd sizes, NCHW and channels_last, a key mask, CFG, per-sample alphas."""
import torch

import genkernels


def fwd_bwd(f, *inputs):
    """f(*inputs), then gradients w.r.t. every input that requires them."""
    y = f(*inputs)
    y = y[0] if isinstance(y, tuple) else y
    wrt = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    if wrt:
        torch.autograd.grad(y, wrt, torch.randn_like(y))


def op_calls(device, dtype):
    """{label: thunk} running each op once on `device` in `dtype` (on the current backend)."""
    def rnd(*shape, grad=False, cl=False):
        t = torch.randn(*shape, device=device, dtype=dtype)
        if cl:
            t = t.contiguous(memory_format=torch.channels_last)
        return t.requires_grad_(grad)

    def gn(cl):
        return lambda: fwd_bwd(lambda x, w, b, s, h: genkernels.group_norm_silu(x, 8, w, b, scale=s, shift=h),
                               rnd(2, 48, 5, 7, grad=True, cl=cl), rnd(48, grad=True), rnd(48, grad=True),
                               rnd(2, 48, grad=True), rnd(2, 48, grad=True))

    def adain(cl):
        return lambda: fwd_bwd(genkernels.adain, rnd(2, 24, 9, 11, grad=True, cl=cl), rnd(2, 24, grad=True),
                               rnd(2, 24, grad=True))

    def attention(lk, d, masked=False):
        mask = torch.zeros(2, lk, dtype=torch.bool, device=device)
        mask[1, lk // 2:] = True
        return lambda: fwd_bwd(lambda q, k, v: genkernels.attention(q, k, v, key_padding_mask=mask if masked else None),
                               rnd(2, 3, 19, d, grad=True), rnd(2, 3, lk, d, grad=True), rnd(2, 3, lk, d, grad=True))

    alphas = (torch.full((2,), 0.5, device=device), torch.full((2,), 0.6, device=device))
    return {
        "group_norm_silu": gn(False),
        "group_norm_silu channels_last": gn(True),
        "group_norm_silu act=None 3d": lambda: fwd_bwd(lambda x: genkernels.group_norm_silu(x, 4, act=None),
                                                       rnd(3, 12, 33, grad=True)),
        "adain": adain(False),
        "adain channels_last": adain(True),
        "attention Lk=77 d=40": attention(77, 40),
        "attention Lk=130 d=160 masked": attention(130, 160, masked=True),
        "attention causal L=150 d=64": lambda: fwd_bwd(lambda q, k, v: genkernels.attention(q, k, v, is_causal=True),
                                                       *(rnd(2, 2, 150, 64, grad=True) for _ in range(3))),
        "vq_nearest D=16": lambda: genkernels.vq_nearest(rnd(37, 16), rnd(50, 16)),
        "vq_nearest D=3": lambda: genkernels.vq_nearest(rnd(37, 3), rnd(50, 3)),
        "ddim_step eta": lambda: genkernels.ddim_step(rnd(2, 4, 9, 9), rnd(2, 4, 9, 9), 0.5, 0.6, eta=0.3,
                                                      noise=rnd(2, 4, 9, 9), clip_sample_range=1.0),
        "ddim_step cfg": lambda: genkernels.ddim_step(rnd(2, 4, 9, 9), rnd(4, 4, 9, 9), *alphas, guidance_scale=7.5),
        "ddpm_step": lambda: genkernels.ddpm_step(rnd(2, 4, 9, 9), rnd(2, 4, 9, 9), 0.5, 0.6, noise=rnd(2, 4, 9, 9)),
    }
