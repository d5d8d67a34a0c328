// CUDA nearest-codebook search (vector quantisation).
// Semantics and argument order: csrc/common/vq_args.h; CPU twin: csrc/cpu/kernels/vq.cpp.
//
// Three launches, no M x K buffer:
//   1. prep:     one warp per code: ||eh_k||^2 and (cosine mode) 1 / max(||e_k||, eps)       -> [K] each
//   2. search:   grid (M blocks of 64 rows, K splits); 256 threads as 16 x 16, each owning 4 rows x 4
//                codes of a 64 x 64 (rows x codes) tile. z and codebook tiles of 16 columns of D are
//                staged in shared memory in the accumulation type (16-bit inputs converted exactly,
//                cosine mode normalised on load); dot products accumulate in registers (SIMT FMA, exact
//                float32: no TF32); scores ||eh||^2 - 2 zh.eh update a per-thread running (best, index)
//                per row (a thread meets its codes in increasing order, strict <: lower code wins
//                ties). The 16 threads sharing rows are merged with shuffles (smaller score, then lower
//                index)                                                       -> [splits, M] partials
//   3. finalize: one warp per row: merges the splits in order and recomputes the chosen code's
//                distance sum (zh - eh)^2                                    -> index, min_dist
// Deterministic (fixed orders, no atomics). Offsets are int64.
#include <algorithm>
#include <cmath>
#include <limits>

#include "common/vq_args.h"
#include "cuda/common.cuh"

namespace gk {
namespace {
using namespace cu;

constexpr int kThreads = 256;
constexpr int kBM = 64, kBK = 64, kBD = 16;  // rows, codes, D-columns per stage
constexpr int kTM = 4, kTN = 4;              // rows x codes per thread
constexpr int kTX = kBK / kTN;               // 16 threads along codes
constexpr int kWarps = kThreads / 32;

// ||row||^2 of a D-vector, summed by the 32 lanes of a warp in a fixed order; every lane gets it.
template <class T>
__device__ __forceinline__ acc_t<T> warp_sq_norm(const T* row, std::int64_t D) {
  using A = acc_t<T>;
  A ss = 0;
  for (std::int64_t d = threadIdx.x & 31; d < D; d += 32) {
    const A v = to_acc(row[d]);
    ss += v * v;
  }
  return group_sum(ss);
}

template <class T, bool COS>
__global__ void __launch_bounds__(kThreads) prep_kernel(const T* __restrict__ e, acc_t<T>* __restrict__ en,
                                                        acc_t<T>* __restrict__ er, std::int64_t K, std::int64_t D,
                                                        acc_t<T> eps) {
  using A = acc_t<T>;
  const int lane = threadIdx.x & 31;
  const std::int64_t k = std::int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (k >= K) return;
  const A ss = warp_sq_norm(e + k * D, D);
  if (lane == 0) {
    if (COS) {
      const A n = sqrt(ss);
      const A den = n > eps ? n : eps;
      er[k] = A(1) / den;
      en[k] = ss / (den * den);
    } else {
      en[k] = ss;
    }
  }
}

template <class T, bool COS>
__global__ void __launch_bounds__(kThreads) search_kernel(const T* __restrict__ z, const T* __restrict__ e,
                                                          const acc_t<T>* __restrict__ en,
                                                          const acc_t<T>* __restrict__ er,
                                                          acc_t<T>* __restrict__ pb, int* __restrict__ pi,
                                                          std::int64_t M, std::int64_t K, std::int64_t D,
                                                          std::int64_t k_per_split, acc_t<T> eps) {
  using A = acc_t<T>;
  __shared__ A zs[kBD][kBM + 4];
  __shared__ A es[kBD][kBK + 4];
  __shared__ A zinv[kBM];
  const int tid = threadIdx.x, tx = tid % kTX, ty = tid / kTX;
  const int lane = tid & 31, warp = tid >> 5;
  const std::int64_t m0 = std::int64_t(blockIdx.x) * kBM;
  const std::int64_t k_start = std::int64_t(blockIdx.y) * k_per_split;
  const std::int64_t k_end = k_start + k_per_split < K ? k_start + k_per_split : K;

  if (COS) {  // 1 / max(||z_m||, eps) of the block's rows, one warp per row
    for (int r = warp; r < kBM; r += kWarps) {
      const std::int64_t m = m0 + r;
      A ss = 0;
      if (m < M)
        for (std::int64_t d = lane; d < D; d += 32) {
          const A v = to_acc(z[m * D + d]);
          ss += v * v;
        }
      ss = group_sum(ss);
      if (lane == 0) {
        const A n = sqrt(ss);
        zinv[r] = A(1) / (n > eps ? n : eps);
      }
    }
    __syncthreads();
  }

  A best[kTM];
  int bidx[kTM];
#pragma unroll
  for (int i = 0; i < kTM; ++i) {
    best[i] = std::numeric_limits<A>::infinity();
    bidx[i] = 0;
  }

  for (std::int64_t k0 = k_start; k0 < k_end; k0 += kBK) {
    A acc[kTM][kTN];
#pragma unroll
    for (int i = 0; i < kTM; ++i)
#pragma unroll
      for (int j = 0; j < kTN; ++j) acc[i][j] = A(0);
    for (std::int64_t d0 = 0; d0 < D; d0 += kBD) {
#pragma unroll
      for (int q = 0; q < kBM * kBD / kThreads; ++q) {
        const int i = tid + q * kThreads, rl = i / kBD, dl = i % kBD;
        const std::int64_t m = m0 + rl, d = d0 + dl;
        A v = (m < M && d < D) ? to_acc(z[m * D + d]) : A(0);
        if (COS) v *= zinv[rl];
        zs[dl][rl] = v;
      }
#pragma unroll
      for (int q = 0; q < kBK * kBD / kThreads; ++q) {
        const int i = tid + q * kThreads, kl = i / kBD, dl = i % kBD;
        const std::int64_t k = k0 + kl, d = d0 + dl;
        A v = (k < k_end && d < D) ? to_acc(e[k * D + d]) : A(0);
        if (COS && k < k_end) v *= er[k];
        es[dl][kl] = v;
      }
      __syncthreads();
#pragma unroll
      for (int dl = 0; dl < kBD; ++dl) {
        A a[kTM], b[kTN];
#pragma unroll
        for (int i = 0; i < kTM; ++i) a[i] = zs[dl][ty * kTM + i];
#pragma unroll
        for (int j = 0; j < kTN; ++j) b[j] = es[dl][tx * kTN + j];
#pragma unroll
        for (int i = 0; i < kTM; ++i)
#pragma unroll
          for (int j = 0; j < kTN; ++j) acc[i][j] = fma(a[i], b[j], acc[i][j]);
      }
      __syncthreads();
    }
#pragma unroll
    for (int j = 0; j < kTN; ++j) {
      const std::int64_t k = k0 + tx * kTN + j;
      if (k < k_end) {
        const A enk = en[k];
#pragma unroll
        for (int i = 0; i < kTM; ++i) {
          const A s = enk - A(2) * acc[i][j];
          if (s < best[i]) {
            best[i] = s;
            bidx[i] = int(k);
          }
        }
      }
    }
  }

  // merge the 16 threads (consecutive lanes) that share these rows: smaller score, then lower index
#pragma unroll
  for (int i = 0; i < kTM; ++i) {
    A v = best[i];
    int k = bidx[i];
#pragma unroll
    for (int o = kTX / 2; o > 0; o >>= 1) {
      const A ov = __shfl_xor_sync(0xffffffffu, v, o, kTX);
      const int ok = __shfl_xor_sync(0xffffffffu, k, o, kTX);
      if (ov < v || (ov == v && ok < k)) {
        v = ov;
        k = ok;
      }
    }
    const std::int64_t m = m0 + ty * kTM + i;
    if (tx == 0 && m < M) {
      pb[std::int64_t(blockIdx.y) * M + m] = v;
      pi[std::int64_t(blockIdx.y) * M + m] = k;
    }
  }
}

template <class T, bool COS>
__global__ void __launch_bounds__(kThreads) finalize_kernel(const T* __restrict__ z, const T* __restrict__ e,
                                                            const acc_t<T>* __restrict__ er,
                                                            const acc_t<T>* __restrict__ pb,
                                                            const int* __restrict__ pi,
                                                            std::int64_t* __restrict__ index,
                                                            acc_t<T>* __restrict__ dist, std::int64_t M,
                                                            std::int64_t D, int splits, acc_t<T> eps) {
  using A = acc_t<T>;
  const int lane = threadIdx.x & 31;
  const std::int64_t m = std::int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (m >= M) return;
  A b = pb[m];
  int k = pi[m];
  for (int s = 1; s < splits; ++s) {
    const A v = pb[std::int64_t(s) * M + m];
    if (v < b) {
      b = v;
      k = pi[std::int64_t(s) * M + m];
    }
  }
  const T* zr = z + m * D;
  const T* ek = e + std::int64_t(k) * D;
  A zden = A(1), einv = A(1);
  if (COS) {
    const A n = sqrt(warp_sq_norm(zr, D));
    zden = n > eps ? n : eps;
    einv = er[k];
  }
  A s = 0;
  for (std::int64_t d = lane; d < D; d += 32) {
    const A zv = COS ? to_acc(zr[d]) / zden : to_acc(zr[d]);
    const A diff = zv - to_acc(ek[d]) * einv;
    s += diff * diff;
  }
  s = group_sum(s);
  if (lane == 0) {
    index[m] = k;
    dist[m] = s;
  }
}

template <class T, bool COS>
void run(const VQArgs& p, const Flat& f, int device, cudaStream_t st) {
  using A = acc_t<T>;
  const std::int64_t M = p.M, K = p.K, D = p.D;
  const T* z = static_cast<const T*>(p.z);
  const T* e = static_cast<const T*>(p.codebook);
  const A eps = A(p.eps);
  const std::int64_t m_blocks = ceil_div<std::int64_t>(M, kBM);
  const std::int64_t k_tiles = ceil_div<std::int64_t>(K, kBK);
  const std::int64_t want = 2 * std::int64_t(sm_count(device));
  std::int64_t splits = std::max<std::int64_t>(1, std::min<std::int64_t>(k_tiles, want / m_blocks));
  const std::int64_t k_per_split = ceil_div<std::int64_t>(k_tiles, splits) * kBK;
  splits = ceil_div<std::int64_t>(K, k_per_split);
  if (m_blocks > std::int64_t(INT32_MAX)) throw std::invalid_argument("vq_nearest (cuda): M too large");
  if (K > std::int64_t(INT32_MAX)) throw std::invalid_argument("vq_nearest (cuda): K too large");

  // scratch: en [K], er [K], pb [splits, M] (A), pi [splits, M] (int)
  const std::size_t nk = std::size_t(K), np = std::size_t(splits * M);
  const std::size_t off_pi = ((2 * nk + np) * sizeof(A) + 15) / 16 * 16;
  char* ws = scratch<char>(f, off_pi + np * sizeof(int), "vq_nearest");
  if (f.size_query) return;
  A* en = reinterpret_cast<A*>(ws);
  A* er = en + nk;
  A* pb = er + nk;
  int* pi = reinterpret_cast<int*>(ws + off_pi);

  GK_LAUNCH(ceil_div<std::int64_t>(K, kWarps), kThreads, 0, st, prep_kernel<T, COS>)(e, en, er, K, D, eps);
  GK_LAUNCH(Extent3(m_blocks, splits), kThreads, 0, st, search_kernel<T, COS>)(
      z, e, en, er, pb, pi, M, K, D, k_per_split, eps);
  GK_LAUNCH(ceil_div<std::int64_t>(M, kWarps), kThreads, 0, st, finalize_kernel<T, COS>)(
      z, e, er, pb, pi, p.index, static_cast<A*>(p.min_dist), M, D, int(splits), eps);
  check(cudaGetLastError(), "vq_nearest launch");
}

}  // namespace

void cuda_vq_nearest(const Flat& a, int device, std::uintptr_t stream) {
  VQArgs p(a);
  if (p.M == 0) return;
  if (p.D == 0) throw std::invalid_argument("vq_nearest (cuda): D must be >= 1");
  DeviceGuard guard(device);
  by_dtype(a.dtype, "vq_nearest", [&](auto t) {
    using T = decltype(t);
    if (p.cosine) run<T, true>(p, a, device, as_stream(stream));
    else run<T, false>(p, a, device, as_stream(stream));
  });
}

}  // namespace gk
