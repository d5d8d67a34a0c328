// CUDA flash attention forward (backward: attention_bwd.cu). Semantics and argument order:
// csrc/common/attention_args.h. A simple, correct baseline: one thread per query row (online softmax
// in registers/local memory, float accumulation), K/V tiles of kTile keys staged in shared memory and
// shared by the block's rows. Fully masked rows: out = 0, lse = -inf. Causal: the block stops after the
// key tile holding its last row's diagonal; within a tile each row drops the keys past its own.
#include <cmath>

#include "common/attention_args.h"
#include "cuda/common.cuh"

namespace gk {
namespace {
using namespace cu;

constexpr int kRows = 128, kMaxD = 256;

template <class T, class A>
__global__ void __launch_bounds__(kRows) attn_fwd_kernel(const T* __restrict q, const T* __restrict k,
                                                         const T* __restrict v, const std::uint8_t* __restrict mask,
                                                         T* __restrict out, A* __restrict lse, AttnArgs p) {
  constexpr int kTile = sizeof(A) == 8 ? 8 : 16;  // 32 KB of shared K/V either way
  __shared__ A ks[kTile][kMaxD];
  __shared__ A vs[kTile][kMaxD];
  __shared__ bool ok[kTile];
  const std::int64_t bh = blockIdx.y, b = bh / p.H, h = bh % p.H;
  const std::int64_t i = std::int64_t(blockIdx.x) * kRows + threadIdx.x;
  const bool live = i < p.Lq;
  const int D = int(p.D);
  const A scale = A(p.scale);
  A qr[kMaxD], acc[kMaxD];
  const T* qrow = q + b * p.qs[0] + h * p.qs[1] + (live ? i : 0) * p.qs[2];
  for (int d = 0; d < D; ++d) { qr[d] = live ? to_acc(qrow[d]) * scale : A(0); acc[d] = A(0); }
  A m = -INFINITY, l = 0;
  // keys any row of this block sees (block-uniform: every thread runs the same tiles and barriers)
  const std::int64_t row_end = std::int64_t(blockIdx.x + 1) * kRows;
  const std::int64_t Lv = p.causal && row_end < p.Lk ? row_end : p.Lk;
  for (std::int64_t j0 = 0; j0 < Lv; j0 += kTile) {
    __syncthreads();
    for (int e = threadIdx.x; e < kTile * D; e += kRows) {
      const int r = e / D, d = e % D;
      const std::int64_t j = j0 + r;
      ks[r][d] = j < p.Lk ? to_acc(k[b * p.ks[0] + h * p.ks[1] + j * p.ks[2] + d]) : A(0);
      vs[r][d] = j < p.Lk ? to_acc(v[b * p.vs[0] + h * p.vs[1] + j * p.vs[2] + d]) : A(0);
    }
    if (threadIdx.x < kTile) {
      const std::int64_t j = j0 + threadIdx.x;
      ok[threadIdx.x] = j < p.Lk && !(mask && mask[b * p.Lk + j]);
    }
    __syncthreads();
    A s[kTile];
    A mx = m;
    for (int r = 0; r < kTile; ++r) {
      A t = 0;
      for (int d = 0; d < D; ++d) t += qr[d] * ks[r][d];
      s[r] = ok[r] && !(p.causal && j0 + r > i) ? t : A(-INFINITY);
      mx = s[r] > mx ? s[r] : mx;
    }
    const A mu = mx == A(-INFINITY) ? A(0) : mx;
    const A alpha = exp(A(m - mu));
    l *= alpha;
    for (int d = 0; d < D; ++d) acc[d] *= alpha;
    for (int r = 0; r < kTile; ++r) {
      const A pr = exp(A(s[r] - mu));
      l += pr;
      for (int d = 0; d < D; ++d) acc[d] += pr * vs[r][d];
    }
    m = mx;
  }
  if (!live) return;
  const A inv = l > A(0) ? A(1) / l : A(0);
  T* orow = out + b * p.os[0] + h * p.os[1] + i * p.os[2];
  for (int d = 0; d < D; ++d) orow[d] = from_acc<T>(A(acc[d] * inv));
  lse[bh * p.Lq + i] = l > A(0) ? m + log(l) : A(-INFINITY);
}

template <class T>
void run(const AttnArgs& p, cudaStream_t stream) {
  using A = acc_t<T>;
  dim3 grid(unsigned((p.Lq + kRows - 1) / kRows), unsigned(p.B * p.H));
  GK_LAUNCH(grid, kRows, 0, stream, attn_fwd_kernel<T, A>)(static_cast<const T*>(p.q), static_cast<const T*>(p.k),
                                                    static_cast<const T*>(p.v), p.mask, static_cast<T*>(p.out),
                                                    static_cast<A*>(p.lse), p);
  check(cudaGetLastError(), "attention_fwd launch");
}

}  // namespace

void cuda_attention_fwd(const Flat& a, int device, std::uintptr_t stream) {
  AttnArgs p(a, false);
  if (p.B * p.H == 0 || p.Lq == 0) return;
  if (p.D > kMaxD) throw std::invalid_argument("attention_fwd (cuda): head dim must be <= 256");
  DeviceGuard guard(device);
  cudaStream_t s = as_stream(stream);
  by_dtype(a.dtype, "attention_fwd", [&](auto t) { run<decltype(t)>(p, s); });
}

}  // namespace gk
