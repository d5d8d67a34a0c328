"""Triton flash attention, forward and backward (FlashAttention-2 style). Same arguments as the native
kernels (csrc/common/attention_args.h): tensors, then ints, then floats. float32 accumulation;
a fully masked row gives out = 0, lse = -inf and zero gradients. CAUSAL (key j visible to row i iff
j <= i): the key loops stop after the block holding a query block's last row, the dk/dv loop starts at
the query block holding its first key; masked tiles are never loaded.

Precision of the products (explicit: Triton's default rounds float32 operands to TF32, ~1e-3 relative,
which the interpreter does not show): every tl.dot takes its operands in the data's dtype. float32 data
uses ``input_precision="tf32x3"``: each operand split into a TF32 high part and the TF32 remainder, three
tensor-core products (hi*hi + hi*lo + lo*hi) with float32 sums, which stays within float32 attention's
tolerance (tests/test_attention_tf32x3.py emulates it) where "ieee" became FMA loops that spilled up
to 140 KB per thread at sm_90. float16/bfloat16 operands go to the tensor cores natively (P and dS are
rounded to the data dtype first, as FlashAttention-2 does), with float32 accumulation. float64 is not
supported here (the softmax state is float32): the op routes it to another backend (ops/attention.py)
and the wrappers refuse it."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import launch


@triton.jit
def _mm(a, b, PREC: tl.constexpr, UPCAST: tl.constexpr):
    """a @ b with float32 accumulation; UPCAST (interpreter, bfloat16): see _upcast."""
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, input_precision=PREC)


@triton.jit
def _kept_dot(a, b, keep, PREC: tl.constexpr, UPCAST: tl.constexpr):
    """a @ b (a [M, K] zero where keep is False) with the dropped pairs never multiplied: NaN/inf in a
    row of b that only dropped pairs meet (a key hidden from every query of the row block by the
    causal mask, a hidden query) cannot reach the result through 0 * NaN. For the tiles on the causal
    diagonal; only a tile of b holding NaN/inf pays for the indicator products that place them."""
    bf = b.to(tl.float32)
    bad = (bf != bf) | (tl.abs(bf) == float("inf"))
    if tl.max(bad.to(tl.int32)) == 0:
        r = _mm(a, b, PREC, UPCAST)
    else:
        af = a.to(tl.float32)
        r = _mm(a, tl.where(bad, 0.0, b), PREC, UPCAST)
        # 0/1 indicators as float16 operands: exact products and float32 sums on the tensor cores
        # (float32 operands at "ieee" became FMA loops that spilled at sm_90)
        kf = keep.to(tl.float16)
        pos = (keep & (af > 0)).to(tl.float16)
        neg = (keep & (af < 0)).to(tl.float16)
        pinf = (bf == float("inf")).to(tl.float16)
        ninf = (bf == float("-inf")).to(tl.float16)
        # kept a * NaN, and kept (0 or NaN) * inf, are NaN; +inf and -inf terms together are NaN
        n_nan = tl.dot(kf, (bf != bf).to(tl.float16)) + tl.dot(kf - pos - neg, pinf + ninf)
        n_pos = tl.dot(pos, pinf) + tl.dot(neg, ninf)
        n_neg = tl.dot(pos, ninf) + tl.dot(neg, pinf)
        fix = tl.where(n_pos > 0, float("inf"), tl.where(n_neg > 0, float("-inf"), r))
        fix = tl.where((n_nan > 0) | ((n_pos > 0) & (n_neg > 0)), float("nan"), fix)
        r = tl.where(r != r, r, fix)
    return r


@triton.jit
def _live(MASK, b, Lk, rn, HAS_MASK: tl.constexpr):
    """Keys rn that exist and are not padding: only these are loaded (a NaN in a padding key is never
    read, so it cannot reach the output through 0 * NaN)."""
    valid = rn < Lk
    if HAS_MASK:
        mk = tl.load(MASK + b * Lk + rn, mask=valid, other=1)
        valid = valid & (mk == 0)
    return valid


@triton.jit
def _fwd_kernel(Q, K, V, MASK, O, LSE, H, Lq, Lk, D,
                q_sb, q_sh, q_sl, k_sb, k_sh, k_sl, v_sb, v_sh, v_sl, o_sb, o_sh, o_sl, scale,
                HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                BD: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr):
    pid = tl.program_id(0)  # blocks of each (batch, head) flattened into grid x: no 65,535 limit on B*H
    nblk = tl.cdiv(Lq, BM)
    bh = (pid // nblk).to(tl.int64)  # b * q_sb and bh * Lq may pass 2**31
    pid_m = pid % nblk
    b = bh // H
    h = bh % H
    rm = pid_m * BM + tl.arange(0, BM)
    rd = tl.arange(0, BD)
    rn0 = tl.arange(0, BN)
    q = tl.load(Q + b * q_sb + h * q_sh + rm[:, None] * q_sl + rd[None, :],
                mask=(rm[:, None] < Lq) & (rd[None, :] < D), other=0.0)
    m_i = tl.full((BM,), float("-inf"), tl.float32)
    l_i = tl.zeros((BM,), tl.float32)
    acc = tl.zeros((BM, BD), tl.float32)
    hi = Lk
    if CAUSAL:
        hi = tl.minimum(Lk, (pid_m + 1) * BM)
    for n0 in range(0, hi, BN):
        rn = n0 + rn0
        valid = _live(MASK, b, Lk, rn, HAS_MASK)
        kv_ok = valid[:, None] & (rd[None, :] < D)
        k = tl.load(K + b * k_sb + h * k_sh + rn[:, None] * k_sl + rd[None, :], mask=kv_ok, other=0.0)
        v = tl.load(V + b * v_sb + h * v_sh + rn[:, None] * v_sl + rd[None, :], mask=kv_ok, other=0.0)
        s = _mm(q, tl.trans(k), PREC, UPCAST) * scale
        keep = valid[None, :]
        if CAUSAL:
            keep = keep & (rn[None, :] <= rm[:, None])
        s = tl.where(keep, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp(s - m_use[:, None])
        alpha = tl.exp(m_i - m_use)
        l_i = l_i * alpha + tl.sum(p, 1)
        if CAUSAL and n0 + BN > pid_m * BM:  # a tile on the diagonal: keys hidden from some rows
            pv = _kept_dot(p.to(v.dtype), v, keep, PREC, UPCAST)
        else:
            pv = _mm(p.to(v.dtype), v, PREC, UPCAST)
        acc = acc * alpha[:, None] + pv
        m_i = m_new
    inv = tl.where(l_i > 0, 1.0 / tl.maximum(l_i, 1e-30), 0.0)
    out = acc * inv[:, None]
    tl.store(O + b * o_sb + h * o_sh + rm[:, None] * o_sl + rd[None, :], out.to(O.dtype.element_ty),
             mask=(rm[:, None] < Lq) & (rd[None, :] < D))
    # -inf for a fully masked row (l_i = 0); a NaN row keeps NaN, as the reference's logsumexp
    lse = tl.where(l_i > 0, m_i + tl.log(tl.maximum(l_i, 1e-30)), tl.where(l_i == 0, float("-inf"), float("nan")))
    tl.store(LSE + bh * Lq + rm, lse, mask=rm < Lq)


@triton.jit
def _probs(q, k, v, do, lse, delta, rm, rn, Lk, b, MASK, scale, HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr,
           PREC: tl.constexpr, UPCAST: tl.constexpr):
    """p and ds [BM, BN] for a query block (q, do, lse, delta) against a key block (k, v at rows rn)."""
    s = _mm(q, tl.trans(k), PREC, UPCAST) * scale
    valid = _live(MASK, b, Lk, rn, HAS_MASK)
    fin = lse != float("-inf")
    lse_u = tl.where(fin, lse, 0.0)
    p = tl.exp(s - lse_u[:, None])
    keep = valid[None, :] & fin[:, None]
    if CAUSAL:
        keep = keep & (rn[None, :] <= rm[:, None])
    p = tl.where(keep, p, 0.0)
    dp = _mm(do, tl.trans(v), PREC, UPCAST)
    ds = tl.where(keep, p * (dp - delta[:, None]), 0.0)  # a hidden pair's dp may be NaN (its v)
    return p, ds, keep


@triton.jit
def _bwd_dkdv_kernel(Q, K, V, MASK, DO, LSE, DELTA, DK, DV, H, Lq, Lk, D,
                     q_sb, q_sh, q_sl, k_sb, k_sh, k_sl, v_sb, v_sh, v_sl, o_sb, o_sh, o_sl, scale,
                     HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                     BD: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr):
    pid = tl.program_id(0)  # flattened as in _fwd_kernel
    nblk = tl.cdiv(Lk, BN)
    bh = (pid // nblk).to(tl.int64)  # b * q_sb and bh * Lq may pass 2**31
    pid_n = pid % nblk
    b = bh // H
    h = bh % H
    rn = pid_n * BN + tl.arange(0, BN)
    rd = tl.arange(0, BD)
    kv_ok = (rn[:, None] < Lk) & (rd[None, :] < D)
    live = _live(MASK, b, Lk, rn, HAS_MASK)[:, None] & (rd[None, :] < D)
    k = tl.load(K + b * k_sb + h * k_sh + rn[:, None] * k_sl + rd[None, :], mask=live, other=0.0)
    v = tl.load(V + b * v_sb + h * v_sh + rn[:, None] * v_sl + rd[None, :], mask=live, other=0.0)
    dk = tl.zeros((BN, BD), tl.float32)
    dv = tl.zeros((BN, BD), tl.float32)
    lo = 0
    if CAUSAL:
        lo = (pid_n * BN) // BM * BM
    for m0 in range(lo, Lq, BM):
        rm = m0 + tl.arange(0, BM)
        q_ok = (rm[:, None] < Lq) & (rd[None, :] < D)
        q = tl.load(Q + b * q_sb + h * q_sh + rm[:, None] * q_sl + rd[None, :], mask=q_ok, other=0.0)
        do = tl.load(DO + b * o_sb + h * o_sh + rm[:, None] * o_sl + rd[None, :], mask=q_ok, other=0.0)
        lse = tl.load(LSE + bh * Lq + rm, mask=rm < Lq, other=float("-inf"))
        delta = tl.load(DELTA + bh * Lq + rm, mask=rm < Lq, other=0.0)
        p, ds, keep = _probs(q, k, v, do, lse, delta, rm, rn, Lk, b, MASK, scale, HAS_MASK, CAUSAL, PREC, UPCAST)
        if CAUSAL and m0 < pid_n * BN + BN:  # a tile on the diagonal: queries hidden from some keys
            dv += _kept_dot(tl.trans(p).to(do.dtype), do, tl.trans(keep), PREC, UPCAST)
            dk += _kept_dot(tl.trans(ds).to(q.dtype), q, tl.trans(keep), PREC, UPCAST)
        else:
            dv += _mm(tl.trans(p).to(do.dtype), do, PREC, UPCAST)
            dk += _mm(tl.trans(ds).to(q.dtype), q, PREC, UPCAST)
    # a padding key's gradients are 0, whatever the queries hold (0 * NaN from a NaN query row)
    dk = tl.where(live, dk * scale, 0.0)
    dv = tl.where(live, dv, 0.0)
    tl.store(DK + b * k_sb + h * k_sh + rn[:, None] * k_sl + rd[None, :], dk.to(DK.dtype.element_ty), mask=kv_ok)
    tl.store(DV + b * v_sb + h * v_sh + rn[:, None] * v_sl + rd[None, :], dv.to(DV.dtype.element_ty), mask=kv_ok)


@triton.jit
def _bwd_dq_kernel(Q, K, V, MASK, DO, LSE, DELTA, DQ, H, Lq, Lk, D,
                   q_sb, q_sh, q_sl, k_sb, k_sh, k_sl, v_sb, v_sh, v_sl, o_sb, o_sh, o_sl, scale,
                   HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                   BD: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr):
    pid = tl.program_id(0)  # blocks of each (batch, head) flattened into grid x: no 65,535 limit on B*H
    nblk = tl.cdiv(Lq, BM)
    bh = (pid // nblk).to(tl.int64)  # b * q_sb and bh * Lq may pass 2**31
    pid_m = pid % nblk
    b = bh // H
    h = bh % H
    rm = pid_m * BM + tl.arange(0, BM)
    rd = tl.arange(0, BD)
    q_ok = (rm[:, None] < Lq) & (rd[None, :] < D)
    q = tl.load(Q + b * q_sb + h * q_sh + rm[:, None] * q_sl + rd[None, :], mask=q_ok, other=0.0)
    do = tl.load(DO + b * o_sb + h * o_sh + rm[:, None] * o_sl + rd[None, :], mask=q_ok, other=0.0)
    lse = tl.load(LSE + bh * Lq + rm, mask=rm < Lq, other=float("-inf"))
    delta = tl.load(DELTA + bh * Lq + rm, mask=rm < Lq, other=0.0)
    dq = tl.zeros((BM, BD), tl.float32)
    hi = Lk
    if CAUSAL:
        hi = tl.minimum(Lk, (pid_m + 1) * BM)
    for n0 in range(0, hi, BN):
        rn = n0 + tl.arange(0, BN)
        kv_ok = _live(MASK, b, Lk, rn, HAS_MASK)[:, None] & (rd[None, :] < D)
        k = tl.load(K + b * k_sb + h * k_sh + rn[:, None] * k_sl + rd[None, :], mask=kv_ok, other=0.0)
        v = tl.load(V + b * v_sb + h * v_sh + rn[:, None] * v_sl + rd[None, :], mask=kv_ok, other=0.0)
        p, ds, keep = _probs(q, k, v, do, lse, delta, rm, rn, Lk, b, MASK, scale, HAS_MASK, CAUSAL, PREC, UPCAST)
        if CAUSAL and n0 + BN > pid_m * BM:  # a tile on the diagonal
            dq += _kept_dot(ds.to(k.dtype), k, keep, PREC, UPCAST)
        else:
            dq += _mm(ds.to(k.dtype), k, PREC, UPCAST)
    tl.store(DQ + b * q_sb + h * q_sh + rm[:, None] * q_sl + rd[None, :], (dq * scale).to(DQ.dtype.element_ty), mask=q_ok)


# tl.dot's input_precision by data dtype (see the module docstring); 16-bit operands are multiplied as
# they are
PREC = {torch.float32: "tf32x3"}


def _upcast(q) -> bool:
    """Triton's interpreter (the CPU test path) computes a bfloat16 tl.dot on the raw bits: there the
    (already bf16-rounded) operands are converted to float32 first, an exact change of the same products."""
    from ..backend import triton_interpret

    return q.dtype == torch.bfloat16 and triton_interpret()


def _check_dtype(q):
    if q.dtype == torch.float64:
        raise ValueError("attention (triton): float64 is not supported (float32 softmax state); "
                         "use the cuda, cpu or reference backend")


def _tiles(dtype, causal, BD):
    """(BM, BN, num_warps, num_stages or None for Triton's default) of the three kernels, chosen by the
    registers and spills of each at sm_90 (tests/triton_sm90_build.py reports them; 255 registers is the
    ceiling, past it a thread spills to local memory).
    float32 (tf32x3: a high and a low part of each operand live at once) from BD = 32 on: 16x16 tiles
    and num_stages=1 (no software-pipelined tile loads held in registers), 8 warps at BD = 256 and causal
    BD = 128. Of those tried at BD = 256 this cut the spill stores from 1060 / 18176 / 11712 bytes (fwd /
    dk,dv / dq at 32x32 on 8 warps, Triton's default stages) to 20 / 480 / 224; at BD <= 128 to 0 / 60 /
    0 or less (causal BD = 128 on 4 warps: 0 / 504 / 312, on 8: 0 / 44 / 52; 4 or 16 warps at BD = 256
    spilled more).
    16-bit data at BD >= 32 takes 8 warps (the dk/dv kernel at 4 spilled at 255 registers: its k, v, dk,
    dv tiles stay in registers for the whole loop). Causal 16-bit takes smaller tiles: the diagonal
    tiles' extra products (_kept_dot) spilled 80-1104 B per kernel at BD 16, 32 and 128 on the
    non-causal tiles (564-904 B at BD = 256 on 32x32), none on these."""
    if dtype == torch.float32:
        return (32, 32, 4, None) if BD == 16 else (16, 16, 8 if BD == 256 or (causal and BD == 128) else 4, 1)
    warps = 8 if BD >= 32 else 4
    if not causal:
        return 32 if BD > 64 else 64, 64 if BD <= 128 else 32, warps, None
    BM, BN = {16: (32, 64), 32: (32, 32), 64: (32, 64), 128: (32, 16), 256: (16, 16)}[BD]
    return BM, BN, warps, None


def _meta(q, mask, causal, D):
    """The kernels' compile-time arguments and launch options (_tiles)."""
    BD = max(16, triton.next_power_of_2(D))
    BM, BN, warps, stages = _tiles(q.dtype, bool(causal), BD)
    meta = dict(HAS_MASK=mask is not None, CAUSAL=bool(causal), BM=BM, BN=BN, BD=BD,
                PREC=PREC.get(q.dtype, "ieee"), UPCAST=_upcast(q), num_warps=warps)
    if stages is not None:
        meta["num_stages"] = stages
    return meta


def attention_fwd(q, k, v, mask, out, lse, B, H, Lq, Lk, D, *strides_causal_scale):
    *strides, causal, scale = strides_causal_scale
    _check_dtype(q)
    meta = _meta(q, mask, causal, D)
    grid = launch.grid(triton.cdiv(Lq, meta["BM"]) * B * H, kernel="attention_fwd (triton)")
    launch.kernel(_fwd_kernel)[grid](q, k, v, mask if mask is not None else q, out, lse, H, Lq, Lk, D, *strides, scale, **meta)


def attention_bwd(q, k, v, mask, out, dout, lse, dq, dk, dv, B, H, Lq, Lk, D, *strides_causal_scale):
    *strides, causal, scale = strides_causal_scale
    _check_dtype(q)
    o_sb, o_sh, o_sl = strides[9:12]
    # delta_i = dout_i . out_i per (b, h, i), [B*H, Lq] float32
    ov = torch.as_strided(out, (B, H, Lq, D), (o_sb, o_sh, o_sl, 1)).float()
    gv = torch.as_strided(dout, (B, H, Lq, D), (o_sb, o_sh, o_sl, 1)).float()
    delta = (ov * gv).sum(-1).contiguous()
    meta = _meta(q, mask, causal, D)
    m = mask if mask is not None else q
    grid_kv = launch.grid(triton.cdiv(Lk, meta["BN"]) * B * H, kernel="attention_bwd (triton)")
    grid_q = launch.grid(triton.cdiv(Lq, meta["BM"]) * B * H, kernel="attention_bwd (triton)")
    launch.kernel(_bwd_dkdv_kernel)[grid_kv](q, k, v, m, dout, lse, delta, dk, dv, H, Lq, Lk, D, *strides, scale, **meta)
    launch.kernel(_bwd_dq_kernel)[grid_q](q, k, v, m, dout, lse, delta, dq, H, Lq, Lk, D, *strides, scale, **meta)
