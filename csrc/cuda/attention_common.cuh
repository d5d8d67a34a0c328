// What the CUDA attention kernels (attention.cu forward, attention_bwd.cu backward) share: the block
// shape, the 1-D grid over (batch*head, row block), row addressing, and the head-dim buckets.
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

// This thread's (batch*head, batch, head, row, row block): blocks of kRows rows of each head,
// flattened into grid x (y would stop at 65,535 heads); `nblk` blocks per head.
struct RowIdx {
  std::int64_t bh, b, h, row, blk;
};
__device__ __forceinline__ RowIdx row_idx(const AttnArgs& p, std::int64_t nblk) {
  const std::int64_t bh = std::int64_t(blockIdx.x) / nblk, blk = std::int64_t(blockIdx.x) % nblk;
  return {bh, bh / p.H, bh % p.H, blk * kRows + threadIdx.x, blk};
}

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
