// CUDA flash attention forward (backward: attention_bwd.cu). Semantics and argument order:
// csrc/common/attention_args.h. A simple, correct baseline: one thread per query row (online softmax
// in registers/local memory sized for the head dim's bucket MD, float accumulation), K/V tiles of kTile
// keys staged in shared memory and shared by the block's rows. Fully masked rows: out = 0, lse = -inf.
// Padding keys are never read (their k and v may hold NaN), and a row accumulates only the keys it
// attends, so NaN/inf in a key it does not attend (padding, or past its diagonal) cannot reach it.
// Causal: the block stops after the key tile holding its last row's diagonal.
#include <cmath>

#include "cuda/attention_common.cuh"

namespace gk {
namespace {
using namespace cu;
using namespace cu::attn;

template <class T, class A, int MD>
__global__ void __launch_bounds__(kRows) attn_fwd_kernel(const T* __restrict q, const T* __restrict k,
                                                         const T* __restrict v, const std::uint8_t* __restrict mask,
                                                         T* __restrict out, A* __restrict lse, AttnArgs p,
                                                         std::int64_t nblk) {
  __shared__ KeyTile<A, MD> kv;
  constexpr int kTile = KeyTile<A, MD>::kTile;
  const RowIdx x = row_idx(p, nblk, p.Lq);
  const std::int64_t i = x.row;
  const bool live = x.live;
  const int D = int(p.D);
  const A scale = A(p.scale);
  A qr[MD], acc[MD];
  const T* qrow = row_at(q, p.qs, x.b, x.h, live ? i : 0);
  for (int d = 0; d < D; ++d) { qr[d] = live ? to_acc(qrow[d]) * scale : A(0); acc[d] = A(0); }
  A m = -INFINITY, l = 0;
  for (std::int64_t j0 = 0, Lv = key_end(p, x.blk); j0 < Lv; j0 += kTile) {
    kv.stage(k, v, mask, p, x.b, x.h, j0);
    A s[kTile];
    A mx = m;
    for (int r = 0; r < kTile; ++r) {
      A t = 0;
      for (int d = 0; d < D; ++d) t += qr[d] * kv.k[r][d];
      s[r] = kv.ok[r] && !(p.causal && j0 + r > i) ? t : A(-INFINITY);
      mx = s[r] > mx ? s[r] : mx;
    }
    const A mu = mx == A(-INFINITY) ? A(0) : mx;
    const A alpha = exp(A(m - mu));
    l *= alpha;
    for (int d = 0; d < D; ++d) acc[d] *= alpha;
    for (int r = 0; r < kTile; ++r) {
      if (!kv.ok[r] || (p.causal && j0 + r > i)) continue;  // not attended: p = 0, and v is never read
      const A pr = exp(A(s[r] - mu));
      l += pr;
      for (int d = 0; d < D; ++d) acc[d] += pr * kv.v[r][d];
    }
    m = mx;
  }
  if (!live) return;
  // l is NaN where a NaN reached the row: the row is NaN (inv NaN), not zero
  const bool none = l == A(0);
  const A inv = none ? A(0) : A(1) / l;
  T* orow = row_at(out, p.os, x.b, x.h, i);
  for (int d = 0; d < D; ++d) orow[d] = from_acc<T>(A(acc[d] * inv));
  lse[x.bh * p.Lq + i] = none ? A(-INFINITY) : m + log(l);
}

template <class T, int MD>
void run(const AttnArgs& p, cudaStream_t stream) {
  using A = acc_t<T>;
  const std::int64_t nblk = row_blocks(p.Lq);
  GK_LAUNCH(nblk * p.B * p.H, kRows, 0, stream, attn_fwd_kernel<T, A, MD>)(
      static_cast<const T*>(p.q), static_cast<const T*>(p.k), static_cast<const T*>(p.v), p.mask,
      static_cast<T*>(p.out), static_cast<A*>(p.lse), p, nblk);
  check(cudaGetLastError(), "attention_fwd launch");
}

}  // namespace

void cuda_attention_fwd(const Flat& a, int device, std::uintptr_t stream) {
  AttnArgs p(a, false);
  if (p.B * p.H == 0 || p.Lq == 0) return;
  if (a.size_query) return;  // no scratch
  DeviceGuard guard(device);
  cudaStream_t s = as_stream(stream);
  by_head_dim(p.D, "attention_fwd", [&](auto md) {
    by_dtype(a.dtype, "attention_fwd", [&](auto t) { run<decltype(t), decltype(md)::value>(p, s); });
  });
}

}  // namespace gk
