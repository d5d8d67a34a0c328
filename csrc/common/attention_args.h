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
// Arguments: sig::attention_fwd / sig::attention_bwd below.
//   key_padding_mask: uint8 [B, Lk] or absent (0); lse: acc type, contiguous [B, H, Lq]
//   backward: dout has out's strides, dq q's, dk k's, dv v's
//   ints: sizes, then element strides (batch, head, row) of q, k, v, out; causal: 0/1 (with 1 the
//   kernels skip key tiles wholly past a query block's last row: j > i everywhere)
#pragma once
#include "common/flat_args.h"

namespace gk {
GK_ARGS_BEGIN

#define GK_ATTN_INTS \
  "B H Lq Lk D q_sb q_sh q_sl k_sb k_sh k_sl v_sb v_sh v_sl o_sb o_sh o_sl causal"
namespace sig {
GK_SIGNATURE(attention_fwd, "q k v key_padding_mask out lse",
    GK_ATTN_INTS,
    "scale");
GK_SIGNATURE(attention_bwd, "q k v key_padding_mask out dout lse dq dk dv",
    GK_ATTN_INTS,
    "scale");
}  // namespace sig
#undef GK_ATTN_INTS

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
  AttnArgs(const Flat& f, bool backward) {
    if (backward) {
      const Named<sig::attention_bwd> a(f);
      unpack(a);
      dout = a.ptr("dout"); dq = a.ptr("dq"); dk = a.ptr("dk"); dv = a.ptr("dv");
    } else {
      unpack(Named<sig::attention_fwd>(f));
    }
  }

 private:
  template <class S>
  void unpack(const Named<S>& a) {
    const char* op = S::kernel;
    const bool backward = word_index(S::ptrs, "dout") >= 0;
    q = a.ptr("q"); k = a.ptr("k"); v = a.ptr("v");
    mask = a.template ptr<std::uint8_t>("key_padding_mask"); out = a.ptr("out"); lse = a.ptr("lse");
    B = a.i("B"); H = a.i("H"); Lq = a.i("Lq"); Lk = a.i("Lk"); D = a.i("D");
    static const char* const names[4][3] = {{"q_sb", "q_sh", "q_sl"}, {"k_sb", "k_sh", "k_sl"},
                                            {"v_sb", "v_sh", "v_sl"}, {"o_sb", "o_sh", "o_sl"}};
    std::int64_t* strides[4] = {qs, ks, vs, os};
    for (int t = 0; t < 4; ++t)
      for (int d = 0; d < 3; ++d) strides[t][d] = a.i(names[t][d]);
    causal = a.i("causal") != 0;
    scale = a.f("scale");
    if (B < 0 || H < 0 || Lq < 0 || Lk < 1 || D < 1)
      throw std::invalid_argument("attention: need B, H, Lq >= 0, Lk >= 1, D >= 1");
    const std::int64_t db = dtype_bytes(a.a.dtype), ab = acc_bytes(a.a.dtype);
    const std::int64_t dq_[3] = {B, H, Lq}, dk_[3] = {B, H, Lk};
    const std::int64_t sq = span(op, dq_, qs, D), sk = span(op, dk_, ks, D), sv = span(op, dk_, vs, D),
                       so = span(op, dq_, os, D);
    a.need("q", sq, db);
    a.need("k", sk, db);
    a.need("v", sv, db);
    a.need("key_padding_mask", mul(op, B, Lk), 1, false);
    a.need("out", so, db);
    a.need("lse", mul(op, B, H, Lq), ab);
    if (backward) {
      a.need("dout", so, db);
      a.need("dq", sq, db);
      a.need("dk", sk, db);
      a.need("dv", sv, db);
    }
  }
};

GK_ARGS_END
}  // namespace gk
