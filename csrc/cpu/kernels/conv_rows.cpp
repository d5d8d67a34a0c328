// CPU convolution / linear layer for few output rows. Semantics and argument order:
// csrc/common/conv_rows_args.h.
//
// The weight is read in its own layout, once: output channels in blocks of NR rows of w, each row
// [KH][KW][C] contiguous. Per block and tap, the NR x C slice of the weight (in L1) serves every output
// row that tap reaches, MR rows at a time: MR x NR vector accumulators of dot products over C, each row
// read in place from x (no im2col copy, no packing), then summed across lanes into y. Padding taps are
// simply not in a row's list, so a 2x2 map computes 16 of its 36 (pixel, tap) products. y starts as
// the bias, and taps add to it in order. Threads split the output channels.
// Written with GCC/Clang vector extensions sized to the ISA of this build (AVX-512: 16 floats; AVX2: 8;
// base: 4), so the same source compiles everywhere.
#include <algorithm>
#include <cstring>
#include <vector>

#include "common/conv_rows_args.h"
#include "cpu/parallel.h"
#include "cpu/vec_math.h"

#if defined(__AVX512F__)
#define GK_CR_VBYTES 64
#elif defined(__AVX__)
#define GK_CR_VBYTES 32
#else
#define GK_CR_VBYTES 16
#endif

namespace gk {
namespace GK_ISA {
namespace {

typedef float Vec __attribute__((vector_size(GK_CR_VBYTES)));
constexpr int kVL = GK_CR_VBYTES / 4;
// MR rows x NR weight rows of accumulators: 12 of the 16 AVX2 registers (each k step loads NR weight
// vectors and MR row vectors for MR * NR FMAs); AVX-512's 32 registers take twice the weight rows.
constexpr int kMR = 4;
constexpr int kNR = GK_CR_VBYTES == 64 ? 6 : 3;
constexpr std::int64_t kTaskRows = 8 * kNR;   // output channels per thread task

static inline Vec loadv(const float* p) { Vec v; std::memcpy(&v, p, sizeof v); return v; }

// The sum of v's lanes: halves added down to 4 lanes, then a pairwise sum.
static inline float lane_sum(Vec v) {
  float t[kVL];
  std::memcpy(t, &v, sizeof v);
  for (int n = kVL / 2; n >= 4; n /= 2)
    for (int l = 0; l < n; ++l) t[l] += t[l + n];
  return (t[0] + t[2]) + (t[1] + t[3]);
}

struct Row {
  const float* x;   // the input row (C values) this tap reads for the output row
  float* y;         // the output row (N values)
};

// y[r][n + j] += sum_c rows[r].x[c] * w[j * ldw + c], for MR rows r and j < NR; prefetches the NR rows
// of `pf` (same columns) when given.
template <int MR, int NR>
static inline void micro(const Row* rows, const float* __restrict w, std::int64_t ldw, std::int64_t C,
                         std::int64_t n, const float* pf) {
  Vec acc[MR][NR];
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < NR; ++j) acc[r][j] = Vec{};
  const float* xr[MR];
  for (int r = 0; r < MR; ++r) xr[r] = rows[r].x;
  std::int64_t c = 0;
  for (; c + kVL <= C; c += kVL) {
    Vec wv[NR];
    if (pf && c % 16 == 0)  // one prefetch per 64-byte line
      for (int j = 0; j < NR; ++j) __builtin_prefetch(pf + j * ldw + c);
    for (int j = 0; j < NR; ++j) wv[j] = loadv(w + j * ldw + c);
    for (int r = 0; r < MR; ++r) {
      const Vec xv = loadv(xr[r] + c);
      for (int j = 0; j < NR; ++j) acc[r][j] += xv * wv[j];
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < NR; ++j) {
      float s = lane_sum(acc[r][j]);
      for (std::int64_t k = c; k < C; ++k) s += xr[r][k] * w[j * ldw + k];
      rows[r].y[n + j] += s;
    }
}

// Every row of `rows` against NR weight rows. The first row block reads the weight slice from memory
// and prefetches `next` (the same columns of the next weight rows, or null): with many short row
// streams the hardware prefetcher fetches them late.
template <int NR>
static void rows_times(const std::vector<Row>& rows, const float* w, std::int64_t ldw, std::int64_t C,
                       std::int64_t n0, const float* next) {
  const std::int64_t n = std::int64_t(rows.size());
  std::int64_t r = 0;
  for (; r + kMR <= n; r += kMR, next = nullptr) micro<kMR, NR>(rows.data() + r, w, ldw, C, n0, next);
  switch (n - r) {
    case 3: micro<3, NR>(rows.data() + r, w, ldw, C, n0, next); break;
    case 2: micro<2, NR>(rows.data() + r, w, ldw, C, n0, next); break;
    case 1: micro<1, NR>(rows.data() + r, w, ldw, C, n0, next); break;
    default: break;
  }
}

template <int NR>
static void block_times(const std::vector<Row>& rows, const float* w, std::int64_t ldw, std::int64_t C,
                        std::int64_t n0, std::int64_t nr, const float* next) {
  if constexpr (NR > 1) {
    if (nr < NR) return block_times<NR - 1>(rows, w, ldw, C, n0, nr, next);
  }
  rows_times<NR>(rows, w, ldw, C, n0, next);
}

}  // namespace

void conv_rows(const Flat& f, int threads) {
  const ConvRowsArgs a(f);
  const std::int64_t P = a.Ho * a.Wo, M = a.B * P, T = a.KH * a.KW, ldw = T * a.C;
  if (M == 0 || a.N == 0) return;
  // per tap, the (input row, output row) pairs it reaches, output pixel by pixel, batch innermost
  std::vector<std::vector<Row>> taps(static_cast<std::size_t>(T));
  for (std::int64_t kh = 0; kh < a.KH; ++kh)
    for (std::int64_t kw = 0; kw < a.KW; ++kw) {
      std::vector<Row>& list = taps[std::size_t(kh * a.KW + kw)];
      for (std::int64_t oh = 0; oh < a.Ho; ++oh) {
        const std::int64_t ih = oh * a.sh - a.ph + kh * a.dh;
        if (ih < 0 || ih >= a.H) continue;
        for (std::int64_t ow = 0; ow < a.Wo; ++ow) {
          const std::int64_t iw = ow * a.sw - a.pw + kw * a.dw;
          if (iw < 0 || iw >= a.W) continue;
          for (std::int64_t b = 0; b < a.B; ++b)
            list.push_back({a.x + ((b * a.H + ih) * a.W + iw) * a.C, a.y + (b * P + oh * a.Wo + ow) * a.N});
        }
      }
    }
  const std::int64_t tasks = (a.N + kTaskRows - 1) / kTaskRows;
  // the multiply-adds, in doubles (M * N * T * C may exceed int64), as elements of a memory-bound loop
  const double work = double(M) * double(a.N) * double(std::max<std::int64_t>(T * a.C, 1)) / 64;
  const int used = threads_for(std::int64_t(std::min(work, 1e15)), threads);
  parallel_for(tasks, used, [&](std::int64_t t) {
    const std::int64_t n0 = t * kTaskRows, n1 = std::min(a.N, n0 + kTaskRows);
    for (std::int64_t m = 0; m < M; ++m) {
      float* yr = a.y + m * a.N;
      for (std::int64_t n = n0; n < n1; ++n) yr[n] = a.bias ? a.bias[n] : 0.0f;
    }
    if (a.C == 0) return;
    for (std::int64_t n = n0; n < n1; n += kNR) {
      const std::int64_t nr = std::min<std::int64_t>(kNR, n1 - n);
      for (std::int64_t tap = 0; tap < T; ++tap) {
        const float* slice = a.w + n * ldw + tap * a.C;
        block_times<kNR>(taps[std::size_t(tap)], slice, ldw, a.C, n, nr, n + nr < a.N ? slice + nr * ldw : nullptr);
      }
    }
  });
}

}  // namespace GK_ISA
}  // namespace gk
