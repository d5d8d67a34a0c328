"""Triton nearest-codebook search (vector quantisation).

Semantics and argument order: csrc/common/vq_args.h (the CPU twin: csrc/cpu/kernels/vq.cpp).

    index[m]    = argmin_k ||eh_k||^2 - 2 zh_m . eh_k          (lowest k on equal scores)
    min_dist[m] = sum_d (zh_m,d - eh_index[m],d)^2              (recomputed for the winner)

Three launches, no M x K buffer:
  1. _prep:     per code, ||e_k||^2 and (cosine mode) 1 / max(||e_k||, eps)            -> [K] each
  2. _search:   grid (M blocks, K splits); a program owns BLOCK_M rows and one range of codes, and for
                each BLOCK_K tile accumulates z . e with ``tl.dot`` over D chunks (float32 accumulation,
                ``input_precision="ieee"``: no TF32 rounding of float32 inputs; 16-bit inputs are multiplied
                exactly), forms the scores in registers and keeps a running (best, index) per row
                                                                                 -> [splits, M] partials
  3. _finalize: merges the splits in order (an earlier split holds lower codes and wins ties) and
                recomputes the chosen code's distance directly                   -> index, min_dist
Cosine mode scales the dot products by 1/||z|| * 1/||e|| instead of normalising the tiles, so 16-bit
inputs keep their native ``tl.dot``. Offsets are int64 (M * D and K * D may exceed 2**31). The host
side does integer arithmetic on shapes only (no syncs).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import launch

_BLOCK_M = 64
_BLOCK_K = 64
_INT_MAX = tl.constexpr(2147483647)


def _block_d(D: int) -> int:
    return min(64, max(16, triton.next_power_of_2(D)))


@triton.jit
def _prep_kernel(E, EN, ER, K, D, eps, COSINE: tl.constexpr, ACC: tl.constexpr,
                 BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
    rk = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
    kmask = rk < K
    rk64 = rk.to(tl.int64)
    ss = tl.zeros([BLOCK_K], dtype=ACC)
    for d0 in range(0, D, BLOCK_D):
        rd = d0 + tl.arange(0, BLOCK_D)
        m = kmask[:, None] & (rd[None, :] < D)
        e = tl.load(E + rk64[:, None] * D + rd[None, :], mask=m, other=0.0).to(ACC)
        ss += tl.sum(e * e, 1)
    if COSINE:
        den = tl.maximum(tl.sqrt(ss), eps)
        tl.store(ER + rk, 1.0 / den, mask=kmask)
        tl.store(EN + rk, ss / (den * den), mask=kmask)
    else:
        tl.store(EN + rk, ss, mask=kmask)


@triton.jit
def _row_denom(Z, rm64, mmask, D, eps, ACC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    """max(||z_m||, eps) of the program's rows (F.normalize's divisor)."""
    ss = tl.zeros([BLOCK_M], dtype=ACC)
    for d0 in range(0, D, BLOCK_D):
        rd = d0 + tl.arange(0, BLOCK_D)
        z = tl.load(Z + rm64[:, None] * D + rd[None, :], mask=mmask[:, None] & (rd[None, :] < D),
                    other=0.0).to(ACC)
        ss += tl.sum(z * z, 1)
    return tl.maximum(tl.sqrt(ss), eps)


@triton.jit
def _search_kernel(Z, E, EN, ER, PB, PI, M, K, D, k_per_split, eps,
                   COSINE: tl.constexpr, ACC: tl.constexpr, UPCAST: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_m = tl.program_id(0)
    sp = tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mmask = rm < M
    rm64 = rm.to(tl.int64)
    if COSINE:
        rz = 1.0 / _row_denom(Z, rm64, mmask, D, eps, ACC, BLOCK_M, BLOCK_D)
    best = tl.full([BLOCK_M], float("inf"), dtype=ACC)
    bidx = tl.zeros([BLOCK_M], dtype=tl.int32)
    k_start = sp * k_per_split
    k_end = tl.minimum(K, k_start + k_per_split)
    for k0 in range(k_start, k_end, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        kmask = rk < k_end
        rk64 = rk.to(tl.int64)
        acc = tl.zeros([BLOCK_M, BLOCK_K], dtype=ACC)
        for d0 in range(0, D, BLOCK_D):
            rd = d0 + tl.arange(0, BLOCK_D)
            dmask = rd < D
            zt = tl.load(Z + rm64[:, None] * D + rd[None, :], mask=mmask[:, None] & dmask[None, :], other=0.0)
            et = tl.load(E + rk64[None, :] * D + rd[:, None], mask=dmask[:, None] & kmask[None, :], other=0.0)
            if UPCAST:  # see _upcast_tiles
                zt = zt.to(tl.float32)
                et = et.to(tl.float32)
            acc = tl.dot(zt, et, acc, input_precision="ieee", out_dtype=ACC)
        en = tl.load(EN + rk, mask=kmask, other=float("inf"))
        if COSINE:
            er = tl.load(ER + rk, mask=kmask, other=0.0)
            acc = acc * rz[:, None] * er[None, :]
        s = en[None, :] - 2.0 * acc
        s = tl.where(s != s, float("inf"), s)  # a NaN score never wins (non-finite rule: vq_nearest.py)
        tmin = tl.min(s, 1)
        targ = tl.min(tl.where(s == tmin[:, None], rk[None, :], _INT_MAX), 1)
        upd = tmin < best
        best = tl.where(upd, tmin, best)
        bidx = tl.where(upd, targ, bidx)
    tl.store(PB + sp * M + rm64, best, mask=mmask)
    tl.store(PI + sp * M + rm64, bidx, mask=mmask)


@triton.jit
def _finalize_kernel(Z, E, ER, PB, PI, IDX, DIST, M, D, splits, eps,
                     COSINE: tl.constexpr, ACC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    mmask = rm < M
    rm64 = rm.to(tl.int64)
    best = tl.load(PB + rm64, mask=mmask, other=0.0)
    bidx = tl.load(PI + rm64, mask=mmask, other=0)
    for s in range(1, splits):
        v = tl.load(PB + s * M + rm64, mask=mmask, other=0.0)
        i = tl.load(PI + s * M + rm64, mask=mmask, other=0)
        upd = v < best
        best = tl.where(upd, v, best)
        bidx = tl.where(upd, i, bidx)
    bk64 = bidx.to(tl.int64)
    if COSINE:
        zden = _row_denom(Z, rm64, mmask, D, eps, ACC, BLOCK_M, BLOCK_D)
        er = tl.load(ER + bk64, mask=mmask, other=1.0)
    dist = tl.zeros([BLOCK_M], dtype=ACC)
    for d0 in range(0, D, BLOCK_D):
        rd = d0 + tl.arange(0, BLOCK_D)
        m = mmask[:, None] & (rd[None, :] < D)
        z = tl.load(Z + rm64[:, None] * D + rd[None, :], mask=m, other=0.0).to(ACC)
        e = tl.load(E + bk64[:, None] * D + rd[None, :], mask=m, other=0.0).to(ACC)
        if COSINE:
            z = z / zden[:, None]
            e = e * er[:, None]
        diff = z - e
        dist += tl.sum(diff * diff, 1)
    tl.store(IDX + rm64, bk64, mask=mmask)
    tl.store(DIST + rm64, dist, mask=mmask)


def _upcast_tiles(dtype: torch.dtype) -> bool:
    """Triton's interpreter (TRITON_INTERPRET=1, the CPU test path) computes bfloat16 ``tl.dot`` on the
    raw bits (garbage results, Triton 3.x): there, bfloat16 tiles are converted to float32 first
    (exact, same result). Compiled kernels use the native bfloat16 dot."""
    from ..backend import triton_interpret

    return dtype == torch.bfloat16 and triton_interpret()


def _target_programs(device: torch.device) -> int:
    if device.type == "cuda":
        return 2 * torch.cuda.get_device_properties(device).multi_processor_count
    return 8


def vq_nearest(z, codebook, index, min_dist, M, K, D, cosine, eps) -> None:
    """Writes index (int64 [M]) and min_dist ([M], accumulation dtype); see vq_args.h."""
    if M == 0:
        return
    acc_t = min_dist.dtype
    ACC = tl.float64 if acc_t == torch.float64 else tl.float32
    cos = bool(cosine)
    dev = z.device
    block_d = _block_d(D)
    en = torch.empty(K, dtype=acc_t, device=dev)
    er = torch.empty(K if cos else 1, dtype=acc_t, device=dev)
    launch.kernel(_prep_kernel)[(triton.cdiv(K, _BLOCK_K),)](codebook, en, er, K, D, float(eps), COSINE=cos, ACC=ACC,
                                              BLOCK_K=_BLOCK_K, BLOCK_D=block_d)
    m_blocks = triton.cdiv(M, _BLOCK_M)
    k_tiles = triton.cdiv(K, _BLOCK_K)
    splits = max(1, min(k_tiles, _target_programs(dev) // m_blocks))
    k_per_split = triton.cdiv(k_tiles, splits) * _BLOCK_K
    splits = triton.cdiv(K, k_per_split)
    pb = torch.empty((splits, M), dtype=acc_t, device=dev)
    pi = torch.empty((splits, M), dtype=torch.int32, device=dev)
    launch.kernel(_search_kernel)[(m_blocks, splits)](z, codebook, en, er, pb, pi, M, K, D, k_per_split, float(eps),
                                       COSINE=cos, ACC=ACC, UPCAST=_upcast_tiles(z.dtype),
                                       BLOCK_M=_BLOCK_M, BLOCK_K=_BLOCK_K,
                                       BLOCK_D=block_d)
    launch.kernel(_finalize_kernel)[(m_blocks,)](z, codebook, er, pb, pi, index, min_dist, M, D, splits, float(eps),
                                  COSINE=cos, ACC=ACC, BLOCK_M=_BLOCK_M, BLOCK_D=block_d)
