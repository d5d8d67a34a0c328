// CUDA flash attention backward, FlashAttention-2 style and deterministic (no atomics). Semantics and
// argument order: csrc/common/attention_args.h (the CPU backward takes the same flat call). A simple,
// correct baseline in the style of the forward (csrc/cuda/attention.cu): one thread per row with its
// vectors in registers/local memory, tiles of the other side staged in shared memory and shared by
// the block's rows; float accumulation (double for float64 data).
//   1. dq kernel, one thread per query row i: delta_i = dout_i . out_i (kept in a [B*H, Lq] scratch
//      buffer for step 2), then over K/V tiles: p_ij = exp(s_ij - lse_i), ds_ij = p_ij (dout_i . v_j -
//      delta_i), dq_i = scale sum_j ds_ij k_j.
//   2. dk/dv kernel, one thread per key row j: over Q/dO tiles (with lse and delta) of all query rows,
//      dv_j = sum_i p_ij dout_i and dk_j = scale sum_i ds_ij q_i.
// P is recomputed from q, k and the saved lse (the same (q * scale) . k as the forward); nothing of
// size Lq x Lk is stored. Masked keys and fully masked rows (lse = -inf) get p = 0, hence zero
// gradients; a padding key is never read (NaN in its k or v has no effect). Lq = 0 writes dk = dv = 0. Causal (p = 0 for j > i): the dq kernel's blocks stop
// after the key tile holding their last row, the dk/dv kernel's blocks start at the query tile holding
// their first key.
#include <cmath>

#include "cuda/attention_common.cuh"

namespace gk {
namespace {
using namespace cu;

using namespace cu::attn;

// Device pointers of one call, typed.
template <class T, class A>
struct BwdPtrs {
  const T *q, *k, *v, *out, *dout;
  const std::uint8_t* mask;  // [B, Lk], nonzero = padding; null: no mask
  const A* lse;              // [B*H, Lq]
  A* delta;                  // [B*H, Lq] scratch: written by the dq kernel, read by the dk/dv kernel
  T *dq, *dk, *dv;
};

// One thread per query row.
template <class T, class A, int MD>
__global__ void __launch_bounds__(kRows) attn_bwd_dq_kernel(BwdPtrs<T, A> t, AttnArgs p, std::int64_t nblk) {
  __shared__ KeyTile<A, MD> kv;
  constexpr int kTile = KeyTile<A, MD>::kTile;
  const RowIdx x = row_idx(p, nblk, p.Lq);
  const std::int64_t bh = x.bh, b = x.b, h = x.h, i = x.row;
  const bool live = x.live;
  const int D = int(p.D);
  const A scale = A(p.scale);
  const std::int64_t r = live ? i : 0;
  const T* qrow = row_at(t.q, p.qs, b, h, r);
  const T* orow = row_at(t.out, p.os, b, h, r);
  const T* grow = row_at(t.dout, p.os, b, h, r);  // dout has out's strides
  A qr[MD], gr[MD], acc[MD];
  A dl = 0;
  for (int d = 0; d < D; ++d) {
    qr[d] = live ? to_acc(qrow[d]) * scale : A(0);
    gr[d] = live ? to_acc(grow[d]) : A(0);
    dl += live ? gr[d] * A(to_acc(orow[d])) : A(0);
    acc[d] = A(0);
  }
  // Rows past Lq and fully masked rows: p = 0 for every key.
  const A L = live ? t.lse[bh * p.Lq + i] : A(-INFINITY);
  const bool has_keys = L != A(-INFINITY);
  for (std::int64_t j0 = 0, Lv = key_end(p, x.blk); j0 < Lv; j0 += kTile) {
    kv.stage(t.k, t.v, t.mask, p, b, h, j0);
    if (!has_keys) continue;
    for (int c = 0; c < kTile; ++c) {
      if (!kv.ok[c]) continue;  // the same for every thread of the block
      if (p.causal && j0 + c > i) break;  // this row's later keys are masked too
      A s = 0, dp = 0;
      for (int d = 0; d < D; ++d) {
        s += qr[d] * kv.k[c][d];
        dp += gr[d] * kv.v[c][d];
      }
      const A ds = exp(A(s - L)) * (dp - dl);
      for (int d = 0; d < D; ++d) acc[d] += ds * kv.k[c][d];
    }
  }
  if (!live) return;
  t.delta[bh * p.Lq + i] = dl;
  T* dqrow = row_at(t.dq, p.qs, b, h, i);  // dq has q's strides
  for (int d = 0; d < D; ++d) dqrow[d] = from_acc<T>(A(acc[d] * scale));
}

// One thread per key row; runs after the dq kernel (same stream), which wrote delta.
template <class T, class A, int MD>
__global__ void __launch_bounds__(kRows) attn_bwd_dkdv_kernel(BwdPtrs<T, A> t, AttnArgs p, std::int64_t nblk) {
  constexpr int kTile = tile_rows<A>();
  __shared__ A qt[kTile][MD];  // q * scale
  __shared__ A gt[kTile][MD];  // dout
  __shared__ A lt[kTile], dlt[kTile];
  const RowIdx x = row_idx(p, nblk, p.Lk);
  const std::int64_t bh = x.bh, b = x.b, h = x.h, j = x.row;
  const bool live = x.live;
  const bool key_ok = live && !(t.mask && t.mask[b * p.Lk + j]);
  const int D = int(p.D);
  const A scale = A(p.scale);
  const std::int64_t r = live ? j : 0;
  const T* krow = row_at(t.k, p.ks, b, h, r);
  const T* vrow = row_at(t.v, p.vs, b, h, r);
  A kr[MD], vr[MD], dka[MD], dva[MD];
  for (int d = 0; d < D; ++d) {
    kr[d] = live ? to_acc(krow[d]) : A(0);
    vr[d] = live ? to_acc(vrow[d]) : A(0);
    dka[d] = A(0);
    dva[d] = A(0);
  }
  // causal: query rows before the block's first key see none of its keys (block-uniform start)
  const std::int64_t key0 = x.blk * kRows;
  const std::int64_t i_begin = p.causal ? key0 / kTile * kTile : 0;
  for (std::int64_t i0 = i_begin; i0 < p.Lq; i0 += kTile) {
    __syncthreads();
    for (int e = threadIdx.x; e < kTile * D; e += kRows) {
      const int c = e / D, d = e % D;
      const std::int64_t i = i0 + c;
      qt[c][d] = i < p.Lq ? to_acc(row_at(t.q, p.qs, b, h, i)[d]) * scale : A(0);
      gt[c][d] = i < p.Lq ? to_acc(row_at(t.dout, p.os, b, h, i)[d]) : A(0);
    }
    if (threadIdx.x < kTile) {
      const std::int64_t i = i0 + threadIdx.x;
      lt[threadIdx.x] = i < p.Lq ? t.lse[bh * p.Lq + i] : A(-INFINITY);
      dlt[threadIdx.x] = i < p.Lq ? t.delta[bh * p.Lq + i] : A(0);
    }
    __syncthreads();
    if (!key_ok) continue;  // masked key or past Lk: p = 0 for every query row
    for (int c = 0; c < kTile; ++c) {
      const A L = lt[c];
      if (L == A(-INFINITY)) continue;  // fully masked row or past Lq (the same for the whole block)
      if (p.causal && i0 + c < j) continue;  // query row before this key
      A s = 0, dp = 0;
      for (int d = 0; d < D; ++d) {
        s += qt[c][d] * kr[d];
        dp += gt[c][d] * vr[d];
      }
      const A pr = exp(A(s - L));
      const A ds = pr * (dp - dlt[c]);
      for (int d = 0; d < D; ++d) {
        dva[d] += pr * gt[c][d];
        dka[d] += ds * qt[c][d];  // q already carries the scale
      }
    }
  }
  if (!live) return;
  T* dkrow = row_at(t.dk, p.ks, b, h, j);  // dk has k's strides, dv v's
  T* dvrow = row_at(t.dv, p.vs, b, h, j);
  for (int d = 0; d < D; ++d) {
    dkrow[d] = from_acc<T>(dka[d]);
    dvrow[d] = from_acc<T>(dva[d]);
  }
}

template <class T, int MD>
void run(const AttnArgs& p, const Flat& f, cudaStream_t stream) {
  using A = acc_t<T>;
  const std::int64_t BH = p.B * p.H;
  A* delta = scratch<A>(f, std::size_t(BH * p.Lq) * sizeof(A), "attention_bwd");
  if (f.size_query) return;
  const BwdPtrs<T, A> t{static_cast<const T*>(p.q),    static_cast<const T*>(p.k),
                        static_cast<const T*>(p.v),    static_cast<const T*>(p.out),
                        static_cast<const T*>(p.dout), p.mask,
                        static_cast<const A*>(p.lse),  delta,
                        static_cast<T*>(p.dq),         static_cast<T*>(p.dk),
                        static_cast<T*>(p.dv)};
  if (p.Lq > 0) {
    const std::int64_t nblk = row_blocks(p.Lq);
    GK_LAUNCH(nblk * BH, kRows, 0, stream, attn_bwd_dq_kernel<T, A, MD>)(t, p, nblk);
    check(cudaGetLastError(), "attention_bwd dq launch");
  }
  const std::int64_t nblk = row_blocks(p.Lk);
  GK_LAUNCH(nblk * BH, kRows, 0, stream, attn_bwd_dkdv_kernel<T, A, MD>)(t, p, nblk);
  check(cudaGetLastError(), "attention_bwd dk/dv launch");
}

}  // namespace

void cuda_attention_bwd(const Flat& a, int device, std::uintptr_t stream) {
  AttnArgs p(a, true);
  if (p.B * p.H == 0) return;
  DeviceGuard guard(device);
  cudaStream_t s = as_stream(stream);
  by_head_dim(p.D, "attention_bwd", [&](auto md) {
    by_dtype(a.dtype, "attention_bwd", [&](auto t) { run<decltype(t), decltype(md)::value>(p, a, s); });
  });
}

}  // namespace gk
