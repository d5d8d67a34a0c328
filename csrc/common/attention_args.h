// Flash attention: out = softmax(q kᵀ · scale) v per (batch, head), with an optional key padding mask.
// Shared by the CPU kernels (csrc/cpu/kernels/attention.cpp) and the CUDA kernels (csrc/cuda/attention.cu, attention_bwd.cu);
// the Triton twin is genkernels/triton/attention.py and the spec is genkernels/ops/attention.py.
//
//   s_ij   = scale * q_i . k_j              (-inf where mask[b, j] != 0: that key is padding, and
//                                             where causal and j > i: top-left aligned as torch SDPA)
//   lse_i  = log sum_j exp(s_ij)            (-inf for a fully masked row)
//   out_i  = sum_j exp(s_ij - lse_i) v_j    (0 for a fully masked row)
// Backward (FlashAttention-2): P recomputed from lse; delta_i = dout_i . out_i;
//   dv_j = sum_i p_ij dout_i;  ds_ij = p_ij (dout_i . v_j - delta_i);
//   dq_i = scale sum_j ds_ij k_j;  dk_j = scale sum_i ds_ij q_i.
// Arithmetic in float (double for float64 data); 16-bit values are converted exactly.
//
// Tensors are addressed as [B, H, L, d] with element strides (batch, head, row) and a unit stride on d,
// which covers both [B, H, L, d] and the token layout [B, L, H*d].
//
// forward  p = [q, k, v, mask, out, lse]
//   mask: uint8 [B, Lk] or absent (0); lse: acc type, contiguous [B, H, Lq]
// backward p = [q, k, v, mask, out, dout, lse, dq, dk, dv]
//   dout has out's strides, dq q's, dk k's, dv v's
// i = [B, H, Lq, Lk, D, q_sb, q_sh, q_sl, k_sb, k_sh, k_sl, v_sb, v_sh, v_sl, o_sb, o_sh, o_sl, causal]
//   causal: 0/1; with 1 the kernels skip key tiles wholly past a query block's last row (j > i everywhere)
// f = [scale]
#pragma once
#include "common/flat_args.h"

namespace gk {
GK_ARGS_BEGIN

struct AttnArgs {
  const void *q, *k, *v;
  const std::uint8_t* mask;
  void* out;
  void* lse;
  const void* dout = nullptr;
  void *dq = nullptr, *dk = nullptr, *dv = nullptr;
  std::int64_t B, H, Lq, Lk, D;
  std::int64_t qs[3], ks[3], vs[3], os[3];
  double scale;
  bool causal;
  AttnArgs(const Flat& a, bool backward) {
    expect(a, backward ? "attention_bwd" : "attention_fwd", backward ? 10 : 6, 18, 1);
    q = a.ptr<void>(0); k = a.ptr<void>(1); v = a.ptr<void>(2);
    mask = a.ptr<std::uint8_t>(3); out = a.ptr<void>(4);
    if (backward) {
      dout = a.ptr<void>(5); lse = a.ptr<void>(6);
      dq = a.ptr<void>(7); dk = a.ptr<void>(8); dv = a.ptr<void>(9);
    } else {
      lse = a.ptr<void>(5);
    }
    B = a.i[0]; H = a.i[1]; Lq = a.i[2]; Lk = a.i[3]; D = a.i[4];
    for (int t = 0; t < 3; ++t) {
      qs[t] = a.i[5 + t]; ks[t] = a.i[8 + t]; vs[t] = a.i[11 + t]; os[t] = a.i[14 + t];
    }
    causal = a.i[17] != 0;
    scale = a.f[0];
    if (B < 0 || H < 0 || Lq < 0 || Lk < 1 || D < 1)
      throw std::invalid_argument("attention: need B, H, Lq >= 0, Lk >= 1, D >= 1");
    const char* op = backward ? "attention_bwd" : "attention_fwd";
    const std::int64_t db = dtype_bytes(a.dtype), ab = acc_bytes(a.dtype);
    const std::int64_t dq[3] = {B, H, Lq}, dk[3] = {B, H, Lk};
    const std::int64_t sq = span(op, dq, qs, D), sk = span(op, dk, ks, D), sv = span(op, dk, vs, D),
                       so = span(op, dq, os, D);
    need(a, op, 0, "q", sq, db);
    need(a, op, 1, "k", sk, db);
    need(a, op, 2, "v", sv, db);
    need(a, op, 3, "key_padding_mask", mul(op, B, Lk), 1, false);
    need(a, op, 4, "out", so, db);
    const std::int64_t nlse = mul(op, B, H, Lq);
    if (backward) {
      need(a, op, 5, "dout", so, db);
      need(a, op, 6, "lse", nlse, ab);
      need(a, op, 7, "dq", sq, db);
      need(a, op, 8, "dk", sk, db);
      need(a, op, 9, "dv", sv, db);
    } else {
      need(a, op, 5, "lse", nlse, ab);
    }
  }
};

GK_ARGS_END
}  // namespace gk
