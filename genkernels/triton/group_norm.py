"""Triton kernels of the normalisation family (group norm / instance norm / AdaIN, + FiLM + SiLU).

Semantics and argument order: csrc/common/norm_args.h (the CPU twin: csrc/cpu/kernels/group_norm.cpp).

    z = ((x - mean[n,g]) * rstd[n,g] * w[c] + b[c]) * s[n,c] + shift[n,c],   y = silu(z) or z

Work is split into tiles of BLOCK_C channels x BLOCK_HW spatial positions, so that a group of any
width (Cg = 1 for instance norm, non-powers of two such as 10 or 40) and either layout is spread over
many programs even at batch 1. A program owns one channel block of one "chunk" of ITERS consecutive
spatial tiles of one sample.

forward   1. _stats:    per (n, chunk, c): the pivot K (the mean of the chunk's first tile: close to
                        the data whatever the mean, and an outlier moves it by 1 / tile of its size,
                        where an outlier picked as a pivot would cost every x - K its precision), then
                        mean and M2 of x - K, two-pass inside each tile (tile mean, then squared
                        deviations around it), tiles merged with Chan's formula
                        -> workspace ws[3, N, n_chunks, C] (mean - K, M2, K)
          2. _fwd_fin:  grid (N*G): merges the group's partials around the group pivot P (K of its
                        first channel's first chunk): weighted mean mu, then M2 = sum M2_k +
                        cnt_k (mean_k - mu)^2 -> mean = P + mu, rstd [N, G], and (P, mu) [2, N, G]
          3. _fwd_apply: same grid as 1: y = act(((x - P) - mu) * (rstd w s) + (b s + shift)); using
                        P and mu rather than the rounded float32 mean keeps y exact for large means.
backward  1. _bwd_sums: per (n, chunk, c) sums of dz and dz*xhat -> workspace (deterministic, no atomics)
          2. _bwd_fin:  grid (N*G): sum_dz, sum_dz_xhat [N, C]; group means of gamma*dz and
                        gamma*dz*xhat (gamma = w s) -> [2, N, G]
          3. _bwd_apply: dx = rstd (gamma dz - mean_g(gamma dz) - xhat mean_g(gamma dz xhat))

Arithmetic is in the statistics dtype (float32; float64 for float64 data). Absent parameters are
compile-time flags (their pointer slots receive a dummy tensor that is never read). Launches are
plain ``kernel[grid](...)`` calls, compatible with ``torch.library.wrap_triton``; the host side does
integer arithmetic only (no syncs). Offsets are int64 (C*HW may reach 2**31).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import launch

_TILE = 2048            # elements per tile (per loop iteration of a program)
_TARGET_PROGRAMS = 1024  # enough to fill a large GPU several times over before chunks get longer
_MAX_ITERS = 8          # at most this many tiles per program
_MAX_BLOCK_HW = 1024    # spatial extent of a channels-first tile
_FIN_TILE = 2048        # elements of the finalisers' [BLOCK_K, BLOCK_CG] tiles
_MAX_BLOCK_CG = 256     # channels of a group per finaliser tile (wider groups loop)


def _plan(N: int, C: int, HW: int, channels_last: int):
    """(BLOCK_C, BLOCK_HW, n_cblocks, ITERS, CHUNK, n_chunks): pure integer arithmetic on the shape."""
    if channels_last:  # channels contiguous: up to 64 of them per row segment, as many rows as fit
        block_c = min(triton.next_power_of_2(C), 64)
        block_hw = min(triton.next_power_of_2(HW), max(1, _TILE // block_c))
    else:              # spatial contiguous
        block_hw = min(triton.next_power_of_2(HW), _MAX_BLOCK_HW)
        block_c = min(triton.next_power_of_2(C), max(1, _TILE // block_hw))
    n_cblocks = triton.cdiv(C, block_c)
    tiles_hw = triton.cdiv(HW, block_hw)
    iters = max(1, min(_MAX_ITERS, (N * n_cblocks * tiles_hw) // _TARGET_PROGRAMS, tiles_hw))
    chunk = iters * block_hw
    n_chunks = triton.cdiv(HW, chunk)
    return block_c, block_hw, n_cblocks, iters, chunk, n_chunks


def _warps(acc_dtype: torch.dtype, backward_dtype: torch.dtype | None = None) -> int:
    """Warps of the tile kernels: 8 for float64 statistics (at 4 their tiles reached 255 registers and
    spilled at sm_90) and for the backward of 16-bit data (float16 _bwd_apply_kernel, channels last,
    spilled 20 B at 4, none at 8; the sums kernel, launched alike, then spills 4 B in one float16
    variant); tests/triton_sm90_build.py reports every kernel's registers and spills."""
    half = backward_dtype in (torch.float16, torch.bfloat16)
    return 8 if acc_dtype == torch.float64 or half else 4


def _fin_blocks(Cg: int, n_chunks: int):
    block_cg = min(triton.next_power_of_2(Cg), _MAX_BLOCK_CG)
    block_k = min(triton.next_power_of_2(n_chunks), max(1, _FIN_TILE // block_cg))
    return block_k, block_cg


# ----------------------------------------------------------------------------------- helpers
@triton.jit
def _tile_ids(n_cblocks, n_chunks, CL: tl.constexpr):
    """(n, channel block, chunk) of this program; neighbours share rows (CL) or channels (NCHW)."""
    pid = tl.program_id(0)
    if CL:
        cb = pid % n_cblocks
        rest = pid // n_cblocks
        k = rest % n_chunks
        n = rest // n_chunks
    else:
        k = pid % n_chunks
        rest = pid // n_chunks
        cb = rest % n_cblocks
        n = rest // n_cblocks
    return n, cb, k


@triton.jit
def _tile_offsets(c, hw, C, HW, CL: tl.constexpr):
    """Offsets (within one sample) of the [BLOCK_C, BLOCK_HW] tile of channels c and positions hw; int64:
    C*HW reaches 2**31 in video VAE activations."""
    if CL:
        offs = hw[None, :].to(tl.int64) * C + c[:, None]
    else:
        offs = c[:, None].to(tl.int64) * HW + hw[None, :]
    return offs


@triton.jit
def _coeffs(W, B, S, T, MEAN, RSTD, n, c, cmask, C, G, Cg,
            HAS_W: tl.constexpr, HAS_B: tl.constexpr, HAS_S: tl.constexpr, HAS_T: tl.constexpr,
            ONE_PLUS_SCALE: tl.constexpr):
    """Per-channel (mean, rstd, gamma = w s, a = rstd gamma, beta = b s + shift) for channels c of sample n."""
    ng = n * G + c // Cg
    m = tl.load(MEAN + ng, mask=cmask, other=0.0)
    r = tl.load(RSTD + ng, mask=cmask, other=0.0)
    acc_ty = m.dtype
    if HAS_W:
        w = tl.load(W + c, mask=cmask, other=0.0)
    else:
        w = tl.full(c.shape, 1.0, acc_ty)
    if HAS_B:
        b = tl.load(B + c, mask=cmask, other=0.0)
    else:
        b = tl.zeros(c.shape, acc_ty)
    if HAS_S:
        s = tl.load(S + n * C + c, mask=cmask, other=0.0)
        if ONE_PLUS_SCALE:
            s = s + 1.0
    else:
        s = tl.full(c.shape, 1.0, acc_ty)
    if HAS_T:
        t = tl.load(T + n * C + c, mask=cmask, other=0.0)
    else:
        t = tl.zeros(c.shape, acc_ty)
    gamma = w * s
    return m, r, gamma, r * gamma, b * s + t


# ----------------------------------------------------------------------------------- forward
@triton.jit(do_not_specialize=['N', 'ITERS', 'n_cblocks', 'n_chunks'])
def _stats_kernel(X, WS, N, C, HW, CHUNK, ITERS, n_cblocks, n_chunks,
                  CL: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    n, cb, k = _tile_ids(n_cblocks, n_chunks, CL)
    acc_ty = WS.dtype.element_ty
    c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    xs = X + n.to(tl.int64) * C * HW
    hw0 = k * CHUNK
    hw = hw0 + tl.arange(0, BLOCK_HW)
    mask = cmask[:, None] & (hw < HW)[None, :]
    x = tl.load(xs + _tile_offsets(c, hw, C, HW, CL), mask=mask, other=0.0).to(acc_ty)
    K = tl.sum(x, axis=1) / tl.cast(tl.minimum(HW - hw0, BLOCK_HW), acc_ty)  # first tile's mean
    mean = tl.zeros([BLOCK_C], acc_ty)  # of x - K over the rows merged so far
    m2 = tl.zeros([BLOCK_C], acc_ty)
    for it in range(ITERS):
        start = hw0 + it * BLOCK_HW
        hw = start + tl.arange(0, BLOCK_HW)
        mask = cmask[:, None] & (hw < HW)[None, :]
        x = tl.load(xs + _tile_offsets(c, hw, C, HW, CL), mask=mask, other=0.0).to(acc_ty)
        x = tl.where(mask, x - K[:, None], 0.0)
        nb = tl.cast(tl.minimum(tl.maximum(HW - start, 0), BLOCK_HW), acc_ty)  # valid rows in this tile
        na = tl.cast(it * BLOCK_HW, acc_ty)                               # rows merged so far
        mb = tl.sum(x, axis=1) / tl.maximum(nb, 1.0)
        d = tl.where(mask, x - mb[:, None], 0.0)
        m2b = tl.sum(d * d, axis=1)
        frac = nb / tl.maximum(na + nb, 1.0)
        delta = mb - mean
        mean = mean + delta * frac
        m2 = m2 + m2b + delta * delta * (na * frac)
    dst = WS + (n * n_chunks + k) * C + c
    tl.store(dst, mean, mask=cmask)
    tl.store(dst + N * n_chunks * C, m2, mask=cmask)
    tl.store(dst + 2 * N * n_chunks * C, K, mask=cmask)


@triton.jit(do_not_specialize=['N', 'G', 'Cg', 'n_chunks'])
def _fwd_fin_kernel(WS, MEAN, RSTD, PMU, N, C, HW, G, Cg, CHUNK, n_chunks, eps,
                    BLOCK_K: tl.constexpr, BLOCK_CG: tl.constexpr):
    ng = tl.program_id(0)
    n = ng // G
    g = ng % G
    acc_ty = WS.dtype.element_ty
    total = tl.cast(Cg * HW, acc_ty)
    m2_off = N * n_chunks * C
    base = WS + n * n_chunks * C + g * Cg
    P = tl.load(base + 2 * m2_off + tl.arange(0, 1))  # group pivot [1]: K of (first channel, chunk 0)
    kr = tl.arange(0, BLOCK_K)
    cr = tl.arange(0, BLOCK_CG)
    # chunk means relative to P: u = (K - P) + (chunk mean of x - K)
    s1 = tl.zeros([BLOCK_K, BLOCK_CG], acc_ty)
    for c0 in range(0, Cg, BLOCK_CG):
        cc = c0 + cr
        cm = cc < Cg
        for k0 in range(0, n_chunks, BLOCK_K):
            kk = k0 + kr
            cnt = tl.cast(tl.minimum(tl.maximum(HW - kk * CHUNK, 0), CHUNK), acc_ty)
            msk = (kk < n_chunks)[:, None] & cm[None, :]
            ptr = base + kk[:, None] * C + cc[None, :]
            mk = tl.load(ptr, mask=msk, other=0.0)
            kp = tl.load(ptr + 2 * m2_off, mask=msk, other=0.0) - P[None, :]
            s1 += tl.where(msk, (mk + kp) * cnt[:, None], 0.0)
    mu = tl.sum(tl.sum(s1, axis=1), axis=0) / total  # group mean - P
    q = tl.zeros([BLOCK_K, BLOCK_CG], acc_ty)
    for c0 in range(0, Cg, BLOCK_CG):
        cc = c0 + cr
        cm = cc < Cg
        for k0 in range(0, n_chunks, BLOCK_K):
            kk = k0 + kr
            cnt = tl.cast(tl.minimum(tl.maximum(HW - kk * CHUNK, 0), CHUNK), acc_ty)
            msk = (kk < n_chunks)[:, None] & cm[None, :]
            ptr = base + kk[:, None] * C + cc[None, :]
            mk = tl.load(ptr, mask=msk, other=0.0)
            m2k = tl.load(ptr + m2_off, mask=msk, other=0.0)
            kp = tl.load(ptr + 2 * m2_off, mask=msk, other=0.0) - P[None, :]
            d = mk + kp - mu
            q += tl.where(msk, m2k + cnt[:, None] * d * d, 0.0)
    var = tl.sum(tl.sum(q, axis=1), axis=0) / total
    if acc_ty == tl.float64:
        sd = tl.sqrt(var + eps)
    else:
        sd = tl.sqrt_rn(var + eps)  # IEEE-rounded (tl.sqrt may be approximate for float32)
    p = tl.sum(P, axis=0)
    tl.store(MEAN + ng, p + mu)
    tl.store(RSTD + ng, 1.0 / sd)
    tl.store(PMU + ng, p)
    tl.store(PMU + N * G + ng, mu)


@triton.jit(do_not_specialize=['N', 'G', 'Cg', 'ITERS', 'n_cblocks', 'n_chunks'])
def _fwd_apply_kernel(X, Y, W, B, S, T, MEAN, RSTD, PMU, N, C, HW, G, Cg, CHUNK, ITERS, n_cblocks, n_chunks,
                      CL: tl.constexpr, SILU: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
                      HAS_S: tl.constexpr, HAS_T: tl.constexpr, ONE_PLUS_SCALE: tl.constexpr,
                      BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    n, cb, k = _tile_ids(n_cblocks, n_chunks, CL)
    c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    m, r, gamma, a, beta = _coeffs(W, B, S, T, MEAN, RSTD, n, c, cmask, C, G, Cg,
                                   HAS_W, HAS_B, HAS_S, HAS_T, ONE_PLUS_SCALE)
    acc_ty = m.dtype
    sample = n.to(tl.int64) * C * HW
    xs = X + sample
    ys = Y + sample
    # x - mean as (x - P) - mu: P (a tile mean) is close to the data and mu = mean - P small, both
    # exact where the rounded float32 mean is not (large means)
    ng = n * G + c // Cg
    P = tl.load(PMU + ng, mask=cmask, other=0.0)
    mu = tl.load(PMU + N * G + ng, mask=cmask, other=0.0)
    hw0 = k * CHUNK
    for it in range(ITERS):
        hw = hw0 + it * BLOCK_HW + tl.arange(0, BLOCK_HW)
        mask = cmask[:, None] & (hw < HW)[None, :]
        offs = _tile_offsets(c, hw, C, HW, CL)
        x = tl.load(xs + offs, mask=mask, other=0.0).to(acc_ty)
        z = ((x - P[:, None]) - mu[:, None]) * a[:, None] + beta[:, None]
        if SILU:
            z = z / (1.0 + tl.exp(-z))
        tl.store(ys + offs, z.to(Y.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------- backward
@triton.jit
def _dz_xhat(x, dy, m, r, a, beta, SILU: tl.constexpr):
    xc = x - m[:, None]
    xhat = xc * r[:, None]
    if SILU:
        z = xc * a[:, None] + beta[:, None]
        sg = 1.0 / (1.0 + tl.exp(-z))
        dz = dy * (sg * (1.0 + z * (1.0 - sg)))
    else:
        dz = dy
    return dz, xhat


@triton.jit(do_not_specialize=['N', 'G', 'Cg', 'ITERS', 'n_cblocks', 'n_chunks'])
def _bwd_sums_kernel(DY, X, W, B, S, T, MEAN, RSTD, WS, N, C, HW, G, Cg, CHUNK, ITERS, n_cblocks, n_chunks,
                     CL: tl.constexpr, SILU: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
                     HAS_S: tl.constexpr, HAS_T: tl.constexpr, ONE_PLUS_SCALE: tl.constexpr,
                     BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    n, cb, k = _tile_ids(n_cblocks, n_chunks, CL)
    c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    m, r, gamma, a, beta = _coeffs(W, B, S, T, MEAN, RSTD, n, c, cmask, C, G, Cg,
                                   HAS_W, HAS_B, HAS_S, HAS_T, ONE_PLUS_SCALE)
    acc_ty = m.dtype
    sample = n.to(tl.int64) * C * HW
    xs = X + sample
    dys = DY + sample
    hw0 = k * CHUNK
    s1 = tl.zeros([BLOCK_C, BLOCK_HW], acc_ty)
    s2 = tl.zeros([BLOCK_C, BLOCK_HW], acc_ty)
    for it in range(ITERS):
        hw = hw0 + it * BLOCK_HW + tl.arange(0, BLOCK_HW)
        mask = cmask[:, None] & (hw < HW)[None, :]
        offs = _tile_offsets(c, hw, C, HW, CL)
        x = tl.load(xs + offs, mask=mask, other=0.0).to(acc_ty)
        dy = tl.load(dys + offs, mask=mask, other=0.0).to(acc_ty)
        dz, xhat = _dz_xhat(x, dy, m, r, a, beta, SILU)
        dz = tl.where(mask, dz, 0.0)
        s1 += dz
        s2 += dz * xhat
    dst = WS + (n * n_chunks + k) * C + c
    tl.store(dst, tl.sum(s1, axis=1), mask=cmask)
    tl.store(dst + N * n_chunks * C, tl.sum(s2, axis=1), mask=cmask)


@triton.jit(do_not_specialize=['N', 'G', 'Cg', 'n_chunks'])
def _bwd_fin_kernel(WS, W, S, SUM_DZ, SUM_DZX, GM, N, C, HW, G, Cg, n_chunks,
                    HAS_W: tl.constexpr, HAS_S: tl.constexpr, ONE_PLUS_SCALE: tl.constexpr,
                    BLOCK_K: tl.constexpr, BLOCK_CG: tl.constexpr):
    ng = tl.program_id(0)
    n = ng // G
    g = ng % G
    acc_ty = WS.dtype.element_ty
    total = tl.cast(Cg * HW, acc_ty)
    s2_off = N * n_chunks * C
    kr = tl.arange(0, BLOCK_K)
    cr = tl.arange(0, BLOCK_CG)
    gb = tl.zeros([BLOCK_CG], acc_ty)
    ga = tl.zeros([BLOCK_CG], acc_ty)
    for c0 in range(0, Cg, BLOCK_CG):
        cc = c0 + cr
        cm = cc < Cg
        ch = g * Cg + cc
        a1 = tl.zeros([BLOCK_K, BLOCK_CG], acc_ty)
        a2 = tl.zeros([BLOCK_K, BLOCK_CG], acc_ty)
        for k0 in range(0, n_chunks, BLOCK_K):
            kk = k0 + kr
            msk = (kk < n_chunks)[:, None] & cm[None, :]
            ptr = WS + (n * n_chunks + kk)[:, None] * C + ch[None, :]
            a1 += tl.load(ptr, mask=msk, other=0.0)
            a2 += tl.load(ptr + s2_off, mask=msk, other=0.0)
        sdz = tl.sum(a1, axis=0)
        sdzx = tl.sum(a2, axis=0)
        tl.store(SUM_DZ + n * C + ch, sdz, mask=cm)
        tl.store(SUM_DZX + n * C + ch, sdzx, mask=cm)
        if HAS_W:
            gamma = tl.load(W + ch, mask=cm, other=0.0)
        else:
            gamma = tl.full([BLOCK_CG], 1.0, acc_ty)
        if HAS_S:
            s = tl.load(S + n * C + ch, mask=cm, other=0.0)
            if ONE_PLUS_SCALE:
                s = s + 1.0
            gamma = gamma * s
        gamma = tl.where(cm, gamma, 0.0)
        gb += gamma * sdz
        ga += gamma * sdzx
    tl.store(GM + ng, tl.sum(gb, axis=0) / total)
    tl.store(GM + N * G + ng, tl.sum(ga, axis=0) / total)


@triton.jit(do_not_specialize=['N', 'G', 'Cg', 'ITERS', 'n_cblocks', 'n_chunks'])
def _bwd_apply_kernel(DY, X, W, B, S, T, MEAN, RSTD, GM, DX, N, C, HW, G, Cg, CHUNK, ITERS, n_cblocks, n_chunks,
                      CL: tl.constexpr, SILU: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
                      HAS_S: tl.constexpr, HAS_T: tl.constexpr, ONE_PLUS_SCALE: tl.constexpr,
                      BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    n, cb, k = _tile_ids(n_cblocks, n_chunks, CL)
    c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    m, r, gamma, a, beta = _coeffs(W, B, S, T, MEAN, RSTD, n, c, cmask, C, G, Cg,
                                   HAS_W, HAS_B, HAS_S, HAS_T, ONE_PLUS_SCALE)
    acc_ty = m.dtype
    ng = n * G + c // Cg
    mB = tl.load(GM + ng, mask=cmask, other=0.0)
    mA = tl.load(GM + N * G + ng, mask=cmask, other=0.0)
    sample = n.to(tl.int64) * C * HW
    xs = X + sample
    dys = DY + sample
    dxs = DX + sample
    hw0 = k * CHUNK
    for it in range(ITERS):
        hw = hw0 + it * BLOCK_HW + tl.arange(0, BLOCK_HW)
        mask = cmask[:, None] & (hw < HW)[None, :]
        offs = _tile_offsets(c, hw, C, HW, CL)
        x = tl.load(xs + offs, mask=mask, other=0.0).to(acc_ty)
        dy = tl.load(dys + offs, mask=mask, other=0.0).to(acc_ty)
        dz, xhat = _dz_xhat(x, dy, m, r, a, beta, SILU)
        dx = r[:, None] * (gamma[:, None] * dz - mB[:, None] - xhat * mA[:, None])
        tl.store(dxs + offs, dx.to(DX.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------- entry points
def group_norm_fwd(x, y, weight, bias, scale, shift, mean, rstd,
                   N, C, HW, G, silu, one_plus_scale, channels_last, eps) -> None:
    """Writes y [x's layout], mean and rstd [N, G] (see norm_args.h)."""
    if N * C * HW == 0:
        return
    cl = int(bool(channels_last))
    Cg = C // G
    block_c, block_hw, n_cblocks, iters, chunk, n_chunks = _plan(N, C, HW, cl)
    ws = torch.empty((3, N, n_chunks, C), dtype=mean.dtype, device=x.device)
    pmu = torch.empty((2, N, G), dtype=mean.dtype, device=x.device)
    grid = (N * n_cblocks * n_chunks,)
    launch.kernel(_stats_kernel)[grid](x, ws, N, C, HW, chunk, iters, n_cblocks, n_chunks,
                        CL=cl, BLOCK_C=block_c, BLOCK_HW=block_hw, num_warps=_warps(mean.dtype))
    block_k, block_cg = _fin_blocks(Cg, n_chunks)
    launch.kernel(_fwd_fin_kernel)[(N * G,)](ws, mean, rstd, pmu, N, C, HW, G, Cg, chunk, n_chunks, float(eps),
                              BLOCK_K=block_k, BLOCK_CG=block_cg)
    dummy = mean
    launch.kernel(_fwd_apply_kernel)[grid](
        x, y, dummy if weight is None else weight, dummy if bias is None else bias,
        dummy if scale is None else scale, dummy if shift is None else shift, mean, rstd, pmu,
        N, C, HW, G, Cg, chunk, iters, n_cblocks, n_chunks,
        CL=cl, SILU=bool(silu), HAS_W=weight is not None, HAS_B=bias is not None,
        HAS_S=scale is not None, HAS_T=shift is not None, ONE_PLUS_SCALE=bool(one_plus_scale),
        BLOCK_C=block_c, BLOCK_HW=block_hw, num_warps=_warps(mean.dtype))


def group_norm_bwd(dy, x, weight, bias, scale, shift, mean, rstd, dx, sum_dz, sum_dz_xhat,
                   N, C, HW, G, silu, one_plus_scale, channels_last) -> None:
    """Writes dx [x's layout] and sum_dz, sum_dz_xhat [N, C] (see norm_args.h)."""
    if N * C * HW == 0:
        return
    cl = int(bool(channels_last))
    Cg = C // G
    block_c, block_hw, n_cblocks, iters, chunk, n_chunks = _plan(N, C, HW, cl)
    acc = mean.dtype
    ws = torch.empty((2, N, n_chunks, C), dtype=acc, device=x.device)
    gm = torch.empty((2, N, G), dtype=acc, device=x.device)
    grid = (N * n_cblocks * n_chunks,)
    dummy = mean
    w = dummy if weight is None else weight
    b = dummy if bias is None else bias
    s = dummy if scale is None else scale
    t = dummy if shift is None else shift
    flags = dict(CL=cl, SILU=bool(silu), HAS_W=weight is not None, HAS_B=bias is not None,
                 HAS_S=scale is not None, HAS_T=shift is not None, ONE_PLUS_SCALE=bool(one_plus_scale),
                 BLOCK_C=block_c, BLOCK_HW=block_hw, num_warps=_warps(acc, x.dtype))
    launch.kernel(_bwd_sums_kernel)[grid](dy, x, w, b, s, t, mean, rstd, ws, N, C, HW, G, Cg, chunk, iters,
                           n_cblocks, n_chunks, **flags)
    block_k, block_cg = _fin_blocks(Cg, n_chunks)
    launch.kernel(_bwd_fin_kernel)[(N * G,)](ws, w, s, sum_dz, sum_dz_xhat, gm, N, C, HW, G, Cg, n_chunks,
                              HAS_W=weight is not None, HAS_S=scale is not None,
                              ONE_PLUS_SCALE=bool(one_plus_scale), BLOCK_K=block_k, BLOCK_CG=block_cg)
    launch.kernel(_bwd_apply_kernel)[grid](dy, x, w, b, s, t, mean, rstd, gm, dx, N, C, HW, G, Cg, chunk, iters,
                            n_cblocks, n_chunks, **flags)
