"""Triton kernel of the diffusion-step family (DDIM / DDPM + fused classifier-free guidance).

Semantics and argument order: csrc/common/ddim_args.h (the CPU twin: csrc/cpu/kernels/ddim.cpp).

    m = m_u + s (m_c - m_u) (guidance) or m;  x0 = clip(A x + B m);  prev = G x0 + H x + K y + S z
    (y = x0 for DDIM with use_clipped_model_output, else m; the terms the reference lacks are left out)

One launch: a program owns ITERS tiles of BLOCK elements of one sample and forms that sample's
coefficients itself from the scalar alphas or the alpha tensors (no host sync, no extra kernel).
Arithmetic in float32 (float64 for float64 data); scalars are passed as float64 so that the float64
path sees the exact alphas. Absent tensors are compile-time flags (their pointer slots get a dummy).
"""
from __future__ import annotations

import triton
import triton.language as tl

from . import launch

_BLOCK = 1024
_TARGET_PROGRAMS = 2048
_MAX_ITERS = 8


@triton.jit
def _alpha(P, n, stride, scalar, HAS: tl.constexpr, ACC: tl.constexpr):
    if HAS:
        a = tl.load(P + n * stride).to(ACC)
    else:
        a = tl.full([], scalar, tl.float64).to(ACC)
    return a


@triton.jit
def _coef(a_t, a_p, eta, KIND: tl.constexpr, PRED: tl.constexpr, USE_CLIPPED: tl.constexpr,
          NOISE: tl.constexpr):
    """The coefficients (A, B, G, H, K, S) of ddim_args.h's step_coef."""
    b_t = 1.0 - a_t
    sa = tl.sqrt(a_t)
    sb = tl.sqrt(b_t)
    sp = tl.sqrt(a_p)
    zero = a_t * 0.0
    if PRED == 0:
        A = 1.0 / sa
        B = -sb / sa
        C = zero
        D = zero + 1.0
    elif PRED == 1:
        A = zero
        B = zero + 1.0
        C = 1.0 / sb
        D = -sa / sb
    else:
        A = sa
        B = -sb
        C = sb
        D = sa
    if KIND == 0:
        var = (1.0 - a_p) / b_t * (1.0 - a_t / a_p)
        std = eta * tl.sqrt(var)
        Q = tl.sqrt(1.0 - a_p - std * std)
        if USE_CLIPPED:
            G = sp
            H = Q / sb
            K = -Q * sa / sb
        else:
            G = sp
            H = Q * C
            K = Q * D
        S = std
    else:
        cur_alpha = a_t / a_p
        cur_beta = 1.0 - cur_alpha
        G = sp * cur_beta / b_t
        H = tl.sqrt(cur_alpha) * (1.0 - a_p) / b_t
        K = zero
        if KIND == 1:
            var = (1.0 - a_p) / b_t * cur_beta
            var = tl.where(var >= 1e-20, var, tl.where(var != var, var, 1e-20))
        else:
            var = cur_beta
        S = tl.sqrt(var)
    if not NOISE:
        S = zero
    # outside the domain (ddim_args.h): NaN coefficients
    ok = (a_t >= 0.0) & (a_t < 1.0) & (a_p > 0.0) & (a_p <= 1.0) & (a_t <= a_p)
    if PRED == 0:
        ok = ok & (a_t > 0.0)
    nan = zero + float("nan")
    A = tl.where(ok, A, nan)
    B = tl.where(ok, B, nan)
    G = tl.where(ok, G, nan)
    H = tl.where(ok, H, nan)
    K = tl.where(ok, K, nan)
    S = tl.where(ok, S, nan)
    return A, B, G, H, K, S


@triton.jit
def _step_kernel(X, M, Z, AT, AP, PREV, X0, N, L, CHUNK, n_chunks, at_stride, ap_stride,
                 at_f: tl.float64, ap_f: tl.float64, eta_f: tl.float64, gscale_f: tl.float64,
                 clip_f: tl.float64,
                 KIND: tl.constexpr, PRED: tl.constexpr, USE_CLIPPED: tl.constexpr, GUIDE: tl.constexpr,
                 CLIP: tl.constexpr, NOISE: tl.constexpr, HAS_AT: tl.constexpr, HAS_AP: tl.constexpr,
                 ACC: tl.constexpr, BLOCK: tl.constexpr, ITERS: tl.constexpr):
    pid = tl.program_id(0)
    n = pid // n_chunks
    k = pid % n_chunks
    a_t = _alpha(AT, n, at_stride, at_f, HAS_AT, ACC)
    a_p = _alpha(AP, n, ap_stride, ap_f, HAS_AP, ACC)
    eta = tl.full([], eta_f, tl.float64).to(ACC)
    A, B, G, H, K, S = _coef(a_t, a_p, eta, KIND, PRED, USE_CLIPPED, NOISE)
    s = tl.full([], gscale_f, tl.float64).to(ACC)
    r = tl.full([], clip_f, tl.float64).to(ACC)
    base = n.to(tl.int64) * L
    cbase = (N + n).to(tl.int64) * L
    for it in tl.static_range(ITERS):
        offs = k * CHUNK + it * BLOCK + tl.arange(0, BLOCK)
        mask = offs < L
        x = tl.load(X + base + offs, mask=mask, other=0.0).to(ACC)
        m = tl.load(M + base + offs, mask=mask, other=0.0).to(ACC)
        if GUIDE:
            mc = tl.load(M + cbase + offs, mask=mask, other=0.0).to(ACC)
            m = m + s * (mc - m)
        # only the terms of the reference formula (ddim_args.h's StepCoef flags): 0 * inf would be NaN
        if PRED == 1:
            x0 = B * m
        else:
            x0 = A * x + B * m
        if CLIP:
            x0 = tl.where(x0 < -r, -r, tl.where(x0 > r, r, x0))
        if KIND == 0 and PRED == 0 and not USE_CLIPPED:
            p = G * x0
        else:
            p = G * x0 + H * x
        if KIND == 0:
            if USE_CLIPPED:
                p = p + K * x0
            else:
                p = p + K * m
        if NOISE:
            z = tl.load(Z + base + offs, mask=mask, other=0.0).to(ACC)
            p = p + S * z
        tl.store(PREV + base + offs, p.to(PREV.dtype.element_ty), mask=mask)
        tl.store(X0 + base + offs, x0.to(X0.dtype.element_ty), mask=mask)


def ddim_step(x, m, noise, alpha_t, alpha_prev, prev, x0,
              N, L, kind, pred, clip, use_clipped, guidance, at_dtype, ap_dtype, at_stride, ap_stride,
              at, ap, eta, gscale, clip_range) -> None:
    """Writes prev and x0 (see ddim_args.h)."""
    if N * L == 0:
        return
    import torch

    block = min(_BLOCK, triton.next_power_of_2(L))
    tiles = triton.cdiv(L, block)
    iters = max(1, min(_MAX_ITERS, (N * tiles) // _TARGET_PROGRAMS, tiles))
    chunk = iters * block
    n_chunks = triton.cdiv(L, chunk)
    acc = tl.float64 if x.dtype == torch.float64 else tl.float32
    dummy = x
    launch.kernel(_step_kernel)[(N * n_chunks,)](
        x, m, dummy if noise is None else noise, dummy if alpha_t is None else alpha_t,
        dummy if alpha_prev is None else alpha_prev, prev, x0, N, L, chunk, n_chunks,
        int(at_stride), int(ap_stride), float(at), float(ap), float(eta), float(gscale), float(clip_range),
        KIND=int(kind), PRED=int(pred), USE_CLIPPED=bool(use_clipped), GUIDE=bool(guidance), CLIP=bool(clip),
        NOISE=noise is not None, HAS_AT=alpha_t is not None, HAS_AP=alpha_prev is not None,
        ACC=acc, BLOCK=block, ITERS=iters)
