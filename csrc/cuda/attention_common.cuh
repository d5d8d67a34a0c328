// What the CUDA attention kernels (attention.cu forward, attention_bwd.cu backward) share: the block
// shape, the 1-D grid over (batch*head, row block), row addressing, the causal key bound and K/V tile
// staging of the query-row kernels, and the head-dim buckets.
#pragma once
#include <stdexcept>
#include <type_traits>

#include "common/attention_args.h"
#include "cuda/common.cuh"

namespace gk {
namespace cu {
namespace attn {

constexpr int kRows = 128;  // threads per block, one row each

// Rows per shared tile: two [kTile][MD] tiles of the accumulation type (32 KB at MD = 256).
template <class A>
constexpr int tile_rows() { return sizeof(A) == 8 ? 8 : 16; }

// Row `r` of a [B, H, L, d] tensor with element strides `s` (batch, head, row), unit stride on d.
template <class T>
__device__ __forceinline__ T* row_at(T* base, const std::int64_t* s, std::int64_t b, std::int64_t h,
                                     std::int64_t r) {
  return base + b * s[0] + h * s[1] + r * s[2];
}

// This thread's (batch*head, batch, head, row, row block) and whether its row is one of the L rows:
// blocks of kRows rows of each head, flattened into grid x (y would stop at 65,535 heads); `nblk`
// blocks per head.
struct RowIdx {
  std::int64_t bh, b, h, row, blk;
  bool live;
};
__device__ __forceinline__ RowIdx row_idx(const AttnArgs& p, std::int64_t nblk, std::int64_t L) {
  const std::int64_t bh = std::int64_t(blockIdx.x) / nblk, blk = std::int64_t(blockIdx.x) % nblk;
  const std::int64_t row = blk * kRows + threadIdx.x;
  return {bh, bh / p.H, bh % p.H, row, blk, row < L};
}

// Keys [0, key_end) are those any query row of block `blk` may attend: a causal block stops after the
// key tile holding its last row's diagonal. Block-uniform: every thread runs the same tiles and barriers.
__device__ __forceinline__ std::int64_t key_end(const AttnArgs& p, std::int64_t blk) {
  const std::int64_t row_end = (blk + 1) * kRows;
  return p.causal && row_end < p.Lk ? row_end : p.Lk;
}

// A tile of kTile keys of one head in shared memory, for the query-row kernels: ok[c] says key j0 + c
// exists and is not padding; k[c], v[c] hold its k and v rows in A, zero where !ok (a padding key is
// never read). No constructor: it is declared __shared__.
template <class A, int MD>
struct KeyTile {
  static constexpr int kTile = tile_rows<A>();
  A k[kTile][MD];
  A v[kTile][MD];
  bool ok[kTile];

  // Stages keys [j0, j0 + kTile) of head (b, h). Every thread of the block calls it; the tile is
  // ready when it returns.
  template <class T>
  __device__ __forceinline__ void stage(const T* kp, const T* vp, const std::uint8_t* mask, const AttnArgs& p,
                                        std::int64_t b, std::int64_t h, std::int64_t j0) {
    const int D = int(p.D);
    __syncthreads();  // the previous tile's readers are done
    if (threadIdx.x < kTile) {
      const std::int64_t j = j0 + threadIdx.x;
      ok[threadIdx.x] = j < p.Lk && !(mask && mask[b * p.Lk + j]);
    }
    __syncthreads();
    for (int e = threadIdx.x; e < kTile * D; e += kRows) {
      const int c = e / D, d = e % D;
      const std::int64_t j = j0 + c;
      k[c][d] = ok[c] ? to_acc(row_at(kp, p.ks, b, h, j)[d]) : A(0);
      v[c][d] = ok[c] ? to_acc(row_at(vp, p.vs, b, h, j)[d]) : A(0);
    }
    __syncthreads();
  }
};

// Row blocks per head for `L` rows.
inline std::int64_t row_blocks(std::int64_t L) { return ceil_div<std::int64_t>(L, kRows); }

// The kernels keep a thread's rows of q, k, v, dout and accumulators in per-thread arrays of MD
// elements, the head dim's bucket: sized for the call's D, not for the largest D.
constexpr int kMaxD = 256;

// Calls f(std::integral_constant<int, MD>{}) with MD the smallest bucket >= D (32, 64, 128, 256).
template <class F>
void by_head_dim(std::int64_t D, const char* op, F&& f) {
  if (D <= 32) f(std::integral_constant<int, 32>{});
  else if (D <= 64) f(std::integral_constant<int, 64>{});
  else if (D <= 128) f(std::integral_constant<int, 128>{});
  else if (D <= kMaxD) f(std::integral_constant<int, kMaxD>{});
  else throw std::invalid_argument(std::string(op) + " (cuda): head dim must be <= 256");
}

}  // namespace attn
}  // namespace cu
}  // namespace gk
