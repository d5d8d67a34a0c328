// CPU nearest-codebook search (vector quantisation). Semantics and argument order: csrc/common/vq_args.h.
//
// A GEMM-shaped loop nest whose "C" tile never leaves the registers:
//   1. the codebook is packed once per call (threaded over panels): converted to the accumulation type,
//      normalised in cosine mode, and transposed into panels of NW = NR * VL codes, [D][NW] each, with
//      ||e_k||^2 per code (padding codes: zeros and +inf, so they never win);
//   2. tasks = (block of MB rows of z) x (range of panels), claimed by the thread pool. A task packs its
//      rows [D][MR] per group of MR rows, then for each codebook tile that fits L2 and each row group runs
//      a register-blocked micro-kernel over every panel of the tile: MR x NR vector accumulators of
//      z . e over the whole of D (broadcast z, FMA with the panel's vectors), then
//      score = ||e||^2 - 2 z.e and a per-lane running (best, index) per row (strict <: the lower code
//      of a lane wins ties, as codes reach a lane in increasing order);
//   3. per row, the lanes (and the panel ranges, in order) are reduced to the smallest score, lowest
//      index among equal scores, and the winner's distance is recomputed as sum (z - e)^2.
// Written with GCC/Clang vector extensions sized to the ISA of this build (AVX-512: 16 floats, 8x3
// blocking; AVX2: 8 floats, 6x2; base: 4 floats, 6x2), so the same source compiles everywhere.
// Extra memory: the packed codebook (K x D) and O(M) per-task state; nothing of size M x K.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <vector>

#include "common/vq_args.h"
#include "cpu/parallel.h"
#include "cpu/vec_math.h"

#if defined(__AVX512F__)
#define GK_VQ_VBYTES 64
#elif defined(__AVX__)
#define GK_VQ_VBYTES 32
#else
#define GK_VQ_VBYTES 16
#endif

namespace gk {
namespace GK_ISA {
namespace {

template <class A> struct VecOf;
template <> struct VecOf<float> {
  typedef float v __attribute__((vector_size(GK_VQ_VBYTES)));
  typedef std::int32_t i __attribute__((vector_size(GK_VQ_VBYTES)));
  typedef std::int32_t ie;
};
template <> struct VecOf<double> {
  typedef double v __attribute__((vector_size(GK_VQ_VBYTES)));
  typedef std::int64_t i __attribute__((vector_size(GK_VQ_VBYTES)));
  typedef std::int64_t ie;
};

#if GK_VQ_VBYTES == 64
constexpr int kMR = 8, kNR = 3;   // 24 accumulators + 3 panel vectors + 1 broadcast of 32 registers
#else
constexpr int kMR = 6, kNR = 2;   // 12 accumulators + 2 + 1 of 16 registers
#endif
constexpr int kGroupsPerBlock = 16;               // MB = 16 * MR rows of z per task
constexpr std::int64_t kTileBytes = 256 * 1024;   // codebook panels per tile: about half of L2

template <class A>
struct K_ {
  using V = typename VecOf<A>::v;
  using VI = typename VecOf<A>::i;
  static constexpr int VL = GK_VQ_VBYTES / int(sizeof(A));
  static constexpr int NW = kNR * VL;  // codes per panel
};

template <class V, class S>
static inline V splat(S s) {
  V v;
  constexpr int n = int(sizeof(V) / sizeof(v[0]));
  for (int l = 0; l < n; ++l) v[l] = s;
  return v;
}

template <class V, class S>
static inline V loadv(const S* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}


// The divisor that F.normalize applies to a row: max(||x||, eps) (1 without cosine mode).
template <class T, class A>
static inline A row_denom(const T* x, std::int64_t D, bool cosine, double eps) {
  if (!cosine) return A(1);
  A s = 0;
  for (std::int64_t d = 0; d < D; ++d) {
    A v = to_acc(x[d]);
    s += v * v;
  }
  A n = std::sqrt(s);
  return n > A(eps) ? n : A(eps);  // NaN norm stays NaN
}

// zh / eh element: x / denom (a division, as F.normalize; exact copy without cosine mode).
template <class T, class A>
static inline A scaled(T x, A denom, bool cosine) {
  return cosine ? to_acc(x) / denom : A(to_acc(x));
}

// MR rows (packed [D][MR]) x one panel ([D][NW]): updates the rows' per-lane running best.
template <class A>
__attribute__((always_inline)) static inline void micro(const A* __restrict zp, const A* __restrict panel,
                                                        const A* __restrict en, std::int64_t D,
                                                        typename K_<A>::V* __restrict best,
                                                        typename K_<A>::VI* __restrict bidx,
                                                        typename K_<A>::VI kid) {
  using V = typename K_<A>::V;
  using VI = typename K_<A>::VI;
  constexpr int VL = K_<A>::VL, NW = K_<A>::NW;
  V acc[kMR][kNR];
  for (int r = 0; r < kMR; ++r)
    for (int j = 0; j < kNR; ++j) acc[r][j] = splat<V>(A(0));
  for (std::int64_t d = 0; d < D; ++d) {
    V b[kNR];
    for (int j = 0; j < kNR; ++j) b[j] = loadv<V>(panel + d * NW + j * VL);
    const A* zd = zp + d * kMR;
    for (int r = 0; r < kMR; ++r) {
      const A zr = zd[r];  // scalar * vector: one broadcast load
      for (int j = 0; j < kNR; ++j) acc[r][j] += zr * b[j];
    }
  }
  V e[kNR];
  for (int j = 0; j < kNR; ++j) e[j] = loadv<V>(en + j * VL);
  for (int r = 0; r < kMR; ++r) {
    V bst = best[r];
    VI bi = bidx[r];
    for (int j = 0; j < kNR; ++j) {
      V s = e[j] - (acc[r][j] + acc[r][j]);  // 2 * acc is exact: fused or not, the same score
      VI lt = s < bst;
      bst = lt ? s : bst;
      bi = lt ? kid + VI(splat<VI>(j * VL)) : bi;
    }
    best[r] = bst;
    bidx[r] = bi;
  }
}

template <class T>
void run(const VQArgs& p, int threads) {
  using A = acc_t<T>;
  using V = typename K_<A>::V;
  using VI = typename K_<A>::VI;
  using IE = typename VecOf<A>::ie;
  constexpr int VL = K_<A>::VL, NW = K_<A>::NW, MR = kMR;
  const std::int64_t M = p.M, K = p.K, D = p.D;
  if (M == 0) return;
  const T* z = static_cast<const T*>(p.z);
  const T* cb = static_cast<const T*>(p.codebook);
  A* out_dist = static_cast<A*>(p.min_dist);
  const bool cosine = p.cosine;
  const double eps = p.eps;
  if (threads < 1) threads = 1;

  // ---- 1. pack the codebook
  const std::int64_t npanels = (K + NW - 1) / NW, Kp = npanels * NW;
  Buf<A> pack(std::size_t(Kp) * std::size_t(D > 0 ? D : 1));
  Buf<A> enorm{std::size_t(Kp)};
  const int pack_threads = K * D < (std::int64_t(1) << 15) ? 1 : threads;
  parallel_for(npanels, pack_threads, [&](std::int64_t pi) {
    A* dst = pack.p + pi * D * NW;
    for (int c = 0; c < NW; ++c) {
      const std::int64_t k = pi * NW + c;
      if (k < K) {
        const T* row = cb + k * D;
        const A den = row_denom<T, A>(row, D, cosine, eps);
        A s = 0;
        for (std::int64_t d = 0; d < D; ++d) {
          const A v = scaled<T, A>(row[d], den, cosine);
          dst[d * NW + c] = v;
          s += v * v;
        }
        enorm.p[k] = s;
      } else {
        for (std::int64_t d = 0; d < D; ++d) dst[d * NW + c] = A(0);
        enorm.p[k] = std::numeric_limits<A>::infinity();
      }
    }
  });

  // ---- 2. tasks: blocks of rows x panel ranges
  const std::int64_t MB = std::min<std::int64_t>(std::int64_t(kGroupsPerBlock) * MR, (M + MR - 1) / MR * MR);
  const std::int64_t nblocks = (M + MB - 1) / MB;
  const double work = double(M) * double(Kp) * double(D > 0 ? D : 1);
  if (work < double(1 << 18)) threads = 1;
  std::int64_t splits = 1;
  if (threads > 1 && nblocks < 4 * std::int64_t(threads))
    splits = std::min<std::int64_t>(npanels, (4 * std::int64_t(threads) + nblocks - 1) / nblocks);
  const std::int64_t panel_bytes = std::int64_t(sizeof(A)) * NW * std::max<std::int64_t>(D, 1);
  const std::int64_t tile = std::max<std::int64_t>(1, kTileBytes / panel_bytes);

  // Per-split results when the panels are split (merged in split order below).
  std::vector<A> part_best(splits > 1 ? std::size_t(splits * M) : 0);
  std::vector<std::int64_t> part_idx(splits > 1 ? std::size_t(splits * M) : 0);

  auto exact_dist = [&](std::int64_t m, std::int64_t k) -> A {
    const T* zr = z + m * D;
    const A den = row_denom<T, A>(zr, D, cosine, eps);
    const A* col = pack.p + (k / NW) * D * NW + (k % NW);
    A s = 0;
    for (std::int64_t d = 0; d < D; ++d) {
      const A diff = scaled<T, A>(zr[d], den, cosine) - col[d * NW];
      s += diff * diff;
    }
    return s;
  };

  VI iota;
  for (int l = 0; l < VL; ++l) iota[l] = IE(l);

  parallel_for(nblocks * splits, threads, [&](std::int64_t t) {
    const std::int64_t blk = t / splits, sp = t % splits;
    const std::int64_t m0 = blk * MB, rows = std::min(MB, M - m0);
    const std::int64_t groups = (rows + MR - 1) / MR;
    const std::int64_t p0 = sp * npanels / splits, p1 = (sp + 1) * npanels / splits;
    // rows of z, [group][D][MR], converted / normalised; padding rows are zero
    Buf<A> zp(std::size_t(groups * MR * std::max<std::int64_t>(D, 1)));
    for (std::int64_t g = 0; g < groups; ++g) {
      A* dst = zp.p + g * D * MR;
      for (int r = 0; r < MR; ++r) {
        const std::int64_t m = m0 + g * MR + r;
        if (m < m0 + rows) {
          const T* zr = z + m * D;
          const A den = row_denom<T, A>(zr, D, cosine, eps);
          for (std::int64_t d = 0; d < D; ++d) dst[d * MR + r] = scaled<T, A>(zr[d], den, cosine);
        } else {
          for (std::int64_t d = 0; d < D; ++d) dst[d * MR + r] = A(0);
        }
      }
    }
    Buf<V> best(std::size_t(groups * MR));
    Buf<VI> bidx(std::size_t(groups * MR));
    const V inf = splat<V>(std::numeric_limits<A>::infinity());
    const VI zero = splat<VI>(IE(0));
    for (std::int64_t r = 0; r < groups * MR; ++r) {
      best.p[r] = inf;
      bidx.p[r] = zero;
    }
    for (std::int64_t pt = p0; pt < p1; pt += tile) {
      const std::int64_t pe = std::min(p1, pt + tile);
      for (std::int64_t g = 0; g < groups; ++g) {
        const A* zg = zp.p + g * D * MR;
        V* bg = best.p + g * MR;
        VI* ig = bidx.p + g * MR;
        for (std::int64_t pi = pt; pi < pe; ++pi)
          micro<A>(zg, pack.p + pi * D * NW, enorm.p + pi * NW, D, bg, ig,
                   iota + VI(splat<VI>(IE(pi * NW))));
      }
    }
    // lanes -> one (score, index) per row: smallest score, lowest index among equal scores
    for (std::int64_t r = 0; r < rows; ++r) {
      const V bv = best.p[r];
      const VI bi = bidx.p[r];
      A s = bv[0];
      std::int64_t k = std::int64_t(bi[0]);
      for (int l = 1; l < VL; ++l) {
        const A v = bv[l];
        const std::int64_t kl = std::int64_t(bi[l]);
        if (v < s || (v == s && kl < k)) { s = v; k = kl; }
      }
      const std::int64_t m = m0 + r;
      if (splits > 1) {
        part_best[std::size_t(sp * M + m)] = s;
        part_idx[std::size_t(sp * M + m)] = k;
      } else {
        p.index[m] = k;
        out_dist[m] = exact_dist(m, k);
      }
    }
  });

  // ---- 3. merge the panel ranges in order (an earlier range wins ties: it holds the lower codes)
  if (splits > 1) {
    parallel_for(nblocks, threads, [&](std::int64_t blk) {
      const std::int64_t m0 = blk * MB, m1 = std::min(M, m0 + MB);
      for (std::int64_t m = m0; m < m1; ++m) {
        A s = part_best[std::size_t(m)];
        std::int64_t k = part_idx[std::size_t(m)];
        for (std::int64_t sp = 1; sp < splits; ++sp) {
          const A v = part_best[std::size_t(sp * M + m)];
          if (v < s) { s = v; k = part_idx[std::size_t(sp * M + m)]; }
        }
        p.index[m] = k;
        out_dist[m] = exact_dist(m, k);
      }
    });
  }
}

}  // namespace

void vq_nearest(const Flat& a, int threads) {
  VQArgs p(a);
  by_dtype(a.dtype, "vq_nearest", [&](auto t) { run<decltype(t)>(p, threads); });
}

}  // namespace GK_ISA
}  // namespace gk
