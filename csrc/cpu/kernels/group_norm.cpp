// CPU group/instance normalisation (+ optional FiLM and SiLU), forward and backward.
// Semantics and argument order: csrc/common/norm_args.h.
//
// Statistics are exact for large means and outliers: blocks of data are summed around their own mean
// (shifted sums, in the accumulation type) and merged with Chan's formula in double.
// Channels-first: a task is a run of consecutive (n, group)s; a group, contiguous in memory, gets its
// statistics as one span; its second pass (forward: apply; backward: dx) finds it in L2, and while
// computing on one group the task prefetches the next. Channels of fewer than kShortRow elements are
// applied (backward: kShortRowBwd) in runs of several channels with per-element coefficients, not one
// short loop each. The
// backward keeps dz (SiLU) in an L2-resident scratch rather than computing exp twice, and writes a
// large dx with non-temporal stores. Channels-last: (n, row-chunk) tasks vectorised across
// channels, two passes over memory.
//
// Hot loops come in two forms that share their element math (act, dz_of): a 16-lane loop where
// vec_math.h has AVX-512 vectors (16-bit data converted in registers, SiLU without exp_f's special
// cases), then a scalar loop the compiler vectorises (the remainder, and every element on other ISAs
// or for double).
#include <algorithm>
#include <type_traits>
#include <vector>

#include "common/norm_args.h"
#include "cpu/parallel.h"
#include "cpu/vec_math.h"

namespace gk {
namespace GK_ISA {
namespace {

// Chan's merge of a block's (mean mb, M2 m2b) into running (mean, m2): wb = nb / (n + nb) and
// wx = n * nb / (n + nb) for a block of nb elements after n (shared by every channel of a row block).
static inline void chan_merge(double& mean, double& m2, double mb, double m2b, double wb, double wx) {
  const double delta = mb - mean;
  mean += delta * wb;
  m2 += m2b + delta * delta * wx;
}

// The mean and 1/sqrt(var + eps) of G groups of Cg channels each, from the channels' mean and M2
// over cnt elements each (in double). One-channel groups (instance norm: thousands of them) take a
// loop the compiler vectorises.
template <class A>
void groups_from_channels(const double* mean_c, const double* m2_c, std::int64_t G, std::int64_t Cg,
                          std::int64_t cnt, double eps, A* __restrict mean_out, A* __restrict rstd_out) {
  const double inv = 1.0 / double(cnt * Cg);
  if (Cg == 1) {
#pragma omp simd
    for (std::int64_t g = 0; g < G; ++g) {
      mean_out[g] = A(mean_c[g]);
      rstd_out[g] = A(1.0 / std::sqrt(m2_c[g] * inv + eps));
    }
    return;
  }
  for (std::int64_t g = 0; g < G; ++g) {
    const double *mc = mean_c + g * Cg, *qc = m2_c + g * Cg;
    double sum = 0, m2 = 0;
    for (std::int64_t c = 0; c < Cg; ++c) sum += mc[c];
    const double mean = sum / double(Cg);
    for (std::int64_t c = 0; c < Cg; ++c) m2 += qc[c] + double(cnt) * (mc[c] - mean) * (mc[c] - mean);
    mean_out[g] = A(mean);
    rstd_out[g] = A(1.0 / std::sqrt(m2 * inv + eps));
  }
}

// Instance norm (one channel per group) on small maps: the statistics of n channels from their shifted
// sums in one loop the compiler vectorises, in the accumulation type (the sums are shifted by the
// channel's mean, so nothing large cancels).
template <class A>
void instance_stats(const A* K, const A* s1, const A* s2, std::int64_t n, std::int64_t cnt, double eps,
                    A* __restrict mean, A* __restrict rstd) {
  const A inv_n = A(1) / A(cnt), e = A(eps);
#pragma omp simd
  for (std::int64_t r = 0; r < n; ++r) {
    const A d = s1[r] * inv_n;
    mean[r] = K[r] + d;
    rstd[r] = A(1) / std::sqrt(std::max(A(0), s2[r] - s1[r] * d) * inv_n + e);
  }
}

// Per-(n, c) coefficients of the forward: z = (x - m) * a + bb. Subtracting the mean first keeps
// inputs with a large mean (or a zero-variance group, where rstd = 1/sqrt(eps)) exact: folding it
// into bb would cancel two large terms.
template <class A>
struct Coeffs {
  std::vector<A> m, a, bb, gamma;  // [N*C]; gamma = w * s (the backward's d z / d xhat)
};

template <class A>
Coeffs<A> make_coeffs(const NormShape& s, const A* mean, const A* rstd, const A* w, const A* b,
                      const A* scale, const A* shift) {
  Coeffs<A> k;
  std::int64_t NC = s.N * s.C, Cg = s.C / s.G;
  k.m.resize(NC); k.a.resize(NC); k.bb.resize(NC); k.gamma.resize(NC);
  for (std::int64_t n = 0; n < s.N; ++n)
    for (std::int64_t c = 0; c < s.C; ++c) {
      std::int64_t nc = n * s.C + c, ng = n * s.G + c / Cg;
      A sc = scale ? (s.one_plus_scale ? A(1) + scale[nc] : scale[nc]) : A(1);
      A wc = w ? w[c] : A(1), bc = b ? b[c] : A(0);
      A g = wc * sc;
      k.gamma[nc] = g;
      k.m[nc] = mean[ng];
      k.a[nc] = rstd[ng] * g;
      k.bb[nc] = bc * sc + (shift ? shift[nc] : A(0));
    }
  return k;
}

// ---------------------------------------------------------------- element math
// V is the accumulation type (scalar loops) or v16f (vector loops); the activation is a compile-time
// choice so that loops stay branch-free.
template <bool SILU, class V> static inline V act(V z) {
  if constexpr (SILU) return silu(z);
  else return z;
}

// dL/dz from dL/dy at pre-activation z: silu'(z) = sg * (1 + z * (1 - sg)).
template <bool SILU, class V> static inline V dz_of(V dy, V z) {
  if constexpr (SILU) {
    V sg = sigmoid(z);
    return dy * (sg * (1.0f + z * (1.0f - sg)));
  } else {
    return dy;
  }
}

// 16-lane loops for element type T exist only in AVX-512 builds, and not for double.
template <class T> constexpr bool vec16() {
#if defined(GK_V16)
  return has_v16<T>;
#else
  return false;
#endif
}

constexpr std::int64_t kBlock = 512;  // float partial sums per block, then accumulated in double
constexpr std::int64_t kSmallRow = 256;  // instance-norm rows up to this long take fwd_small_rows

// ---------------------------------------------------------------- channels-first rows
// Running (count, mean, M2) of a stream of blocks, merged with Chan's formula in double: exact enough
// whatever the data's mean, spread or outliers (a block's own statistics are taken around its own
// mean, so nothing large cancels).
struct Welford {
  double n = 0, mean = 0, m2 = 0;
  // A block of nb elements with shifted sums b1 = sum(x - k), b2 = sum((x - k)^2) around its mean estimate k.
  void add_shifted(double nb, double k, double b1, double b2) {
    const double d = b1 / nb, mb = k + d, m2b = std::max(0.0, b2 - b1 * d);
    add(nb, mb, m2b);
  }
  void add(double nb, double mb, double m2b) {
    const double tot = n + nb;
    chan_merge(mean, m2, mb, m2b, nb / tot, n * nb / tot);
    n = tot;
  }
  // As shifted sums (K, s1, s2) around K = the mean rounded to A: the form instance_stats takes
  // (sum (x-K)^2 = M2 + n (mean-K)^2).
  template <class A> void shifted(A* K, A* s1, A* s2) const {
    *K = A(mean);
    const double r = mean - double(*K);
    *s1 = A(n * r);
    *s2 = A(m2 + n * r * r);
  }
};

// Statistics of n contiguous elements (a row, or a channels-first group).
// Blocks of kBlock elements (L1-resident) are read twice: their sum gives the block's mean k, then
// the sums of (x - k) and (x - k)^2 in the accumulation type; blocks merge in double (Welford).
// Memory-bound: the vector loops keep two accumulators per sum so that the add latency does not limit them.
template <class T>
Welford span_stats(const T* x, std::int64_t n) {
  using A = acc_t<T>;
  Welford w;
  for (std::int64_t i0 = 0; i0 < n; i0 += kBlock) {
    const std::int64_t i1 = std::min(n, i0 + kBlock);
    A b0 = 0, b1 = 0, b2 = 0;
    std::int64_t i = i0;
#if defined(GK_V16)
    if constexpr (vec16<T>()) {
      v16f p0 = splat_v16(0), q0 = p0;
      for (; i + 32 <= i1; i += 32) { p0 += load_v16(x + i); q0 += load_v16(x + i + 16); }
      if (i + 16 <= i1) { p0 += load_v16(x + i); i += 16; }
      b0 = sum_v16(p0 + q0);
    }
#endif
    const std::int64_t iv = i;  // where the vector loops stopped
    if (i < i1 || n > kSmallRow) {  // (skipped when empty: a serial lane chain that short rows notice)
#pragma omp simd reduction(+ : b0)
      for (std::int64_t j = i; j < i1; ++j) b0 += to_acc(x[j]);
    }
    const A k = b0 / A(i1 - i0);
    i = i0;
#if defined(GK_V16)
    if constexpr (vec16<T>()) {
      v16f p1 = splat_v16(0), p2 = p1, q1 = p1, q2 = p1;
      for (; i + 32 <= iv; i += 32) {
        v16f d = load_v16(x + i) - k, e = load_v16(x + i + 16) - k;
        p1 += d; p2 += d * d;
        q1 += e; q2 += e * e;
      }
      if (i + 16 <= iv) {
        v16f d = load_v16(x + i) - k;
        p1 += d; p2 += d * d;
        i += 16;
      }
      b1 = sum_v16(p1 + q1); b2 = sum_v16(p2 + q2);
    }
#endif
    if (i < i1 || n > kSmallRow) {
#pragma omp simd reduction(+ : b1, b2)
      for (std::int64_t j = i; j < i1; ++j) {
        A d = to_acc(x[j]) - k;
        b1 += d;
        b2 += d * d;
      }
    }
    w.add_shifted(double(i1 - i0), double(k), double(b1), double(b2));
  }
  return w;
}

// A row's statistics as shifted sums (K, s1, s2) around its mean.
template <class T, class A>
void row_sums(const T* x, std::int64_t n, A* K_out, A* s1_out, A* s2_out) {
  span_stats(x, n).shifted(K_out, s1_out, s2_out);
}

// Stores of the 16-lane loops: non-temporal (NT, p aligned to 16 elements) or ordinary.
#if defined(GK_V16)
template <bool NT, class T, class V> static inline void put_v16(T* p, V v) {
  if constexpr (NT) stream_v16(p, v); else store_v16(p, v);
}
#else
// Declared only: the 16-lane loop bodies are generic lambdas (auto index, auto locals), so here they
// are parsed but never instantiated.
template <bool NT, class T, class V> void put_v16(T* p, V v);
#endif

// Orders a task's non-temporal stores before the pool hands its results to another thread.
template <bool NT> static inline void end_streams() {
#if defined(GK_V16)
  if (NT) stream_fence();
#endif
}

// Elements before p reaches the alignment of 16-lane non-temporal stores (all n if it never does).
template <class T> std::int64_t head_to_align(const T* p, std::int64_t n) {
  const std::uintptr_t mis = reinterpret_cast<std::uintptr_t>(p) % (16 * sizeof(T));
  if (mis == 0) return 0;
  return mis % sizeof(T) ? n : std::min<std::int64_t>(n, (16 * sizeof(T) - mis) / sizeof(T));
}

// Runs an elementwise loop over [0, n) writing to out: vec(i) for 16 elements at i where this build
// has 16-lane vectors for T (after an unaligned head when NT), scalar(j0, j1) for the rest. vec takes
// `auto i` so that its body, which uses the vector helpers, is only compiled where they exist.
template <bool NT, class T, class Scalar, class Vec>
static inline void lanes(const T* out, std::int64_t n, Scalar&& scalar, Vec&& vec) {
  std::int64_t i = 0;
#if defined(GK_V16)
  if constexpr (vec16<T>()) {
    i = NT ? head_to_align(out, n) : 0;
    if (i > 0) scalar(0, i);
    for (; i + 16 <= n; i += 16) vec(i);
  }
#endif
  if (i < n) scalar(i, n);  // (skipped when empty: channels-last rows are short, the setup is not free)
}

// Prefetches the line holding p into L2: the channels-first loops fetch their task's next group
// while they compute on the current one, so that its first pass does not wait on memory. The row
// loops take the distance `pf` (in elements) from what they read to what they prefetch.
static inline void prefetch_l2(const void* p) { __builtin_prefetch(p, 0, 2); }

// y = act((x - m) * a + bb) over one row. (The scalar loops are functions of their own so that the
// __restrict of their pointers reaches the vectoriser; through a lambda's captures it does not.)
template <bool SILU, class T, class A>
void apply_scalar(const T* __restrict x, T* __restrict y, std::int64_t i0, std::int64_t i1, A m, A a, A bb) {
#pragma omp simd
  for (std::int64_t j = i0; j < i1; ++j) y[j] = from_acc<T>(act<SILU>((to_acc(x[j]) - m) * a + bb));
}

template <bool SILU, bool PREFETCH = true, class T, class A>
void apply_row(const T* __restrict x, T* __restrict y, std::int64_t pf, std::int64_t n, A m, A a, A bb) {
  lanes<false>(y, n, [&](std::int64_t j0, std::int64_t j1) { apply_scalar<SILU>(x, y, j0, j1, m, a, bb); },
      [&](auto i) {
        if (PREFETCH) prefetch_l2(x + pf + i);
        store_v16(y + i, act<SILU>((load_v16(x + i) - m) * a + bb));
      });
}

// y = act((x - m) * a + bb) with per-element m, a, bb: a channels-last row (C channels), or a run of
// short channels-first rows with their coefficients repeated per element.
template <bool SILU, class T, class A>
void apply_coeffs_scalar(const T* __restrict xr, T* __restrict yr, const A* __restrict mn, const A* __restrict an,
                         const A* __restrict bn, std::int64_t j0, std::int64_t j1) {
#pragma omp simd
  for (std::int64_t j = j0; j < j1; ++j) yr[j] = from_acc<T>(act<SILU>((to_acc(xr[j]) - mn[j]) * an[j] + bn[j]));
}

template <bool SILU, class T, class A>
void apply_coeffs_row(const T* __restrict xr, T* __restrict yr, const A* __restrict mn, const A* __restrict an,
                      const A* __restrict bn, std::int64_t n) {
  lanes<false>(yr, n, [&](std::int64_t j0, std::int64_t j1) { apply_coeffs_scalar<SILU>(xr, yr, mn, an, bn, j0, j1); },
      [&](auto c) {
        store_v16(yr + c, act<SILU>((load_v16(xr + c) - load_v16(mn + c)) * load_v16(an + c) + load_v16(bn + c)));
      });
}

// Backward pass 1 over one row: dz (stored to dz_out when SILU; without an activation dz is dy and the
// second pass reads dy itself), sum dz and sum dz * (x - m) (times rstd, that is sum dz * xhat).
template <bool SILU, class T, class A>
void dz_row(const T* __restrict x, const T* __restrict dy, A* __restrict dz_out, std::int64_t pf, std::int64_t n,
            A m, A a, A bb, double* sum_dz, double* sum_dzxc) {
  double s1 = 0, s2 = 0;
  for (std::int64_t i0 = 0; i0 < n; i0 += kBlock) {
    const std::int64_t i1 = std::min(n, i0 + kBlock);
    std::int64_t i = i0;
    A b1 = 0, b2 = 0;
#if defined(GK_V16)
    if constexpr (vec16<T>()) {
      v16f p1 = splat_v16(0), p2 = p1;
      for (; i + 16 <= i1; i += 16) {
        prefetch_l2(x + pf + i);
        prefetch_l2(dy + pf + i);
        v16f xc = load_v16(x + i) - m;
        v16f d = dz_of<SILU>(load_v16(dy + i), xc * a + bb);
        if (SILU) store_v16(dz_out + i, d);
        p1 += d;
        p2 += d * xc;
      }
      b1 = sum_v16(p1); b2 = sum_v16(p2);
    }
#endif
    if (i < i1) {  // (as in row_sums)
#pragma omp simd reduction(+ : b1, b2)
      for (std::int64_t j = i; j < i1; ++j) {
        A xc = to_acc(x[j]) - m;
        A d = dz_of<SILU>(to_acc(dy[j]), xc * a + bb);
        if (SILU) dz_out[j] = d;
        b1 += d;
        b2 += d * xc;
      }
    }
    s1 += b1; s2 += b2;
  }
  *sum_dz = s1; *sum_dzxc = s2;
}

// A coefficient of element j: one for the whole row, or one per element (runs of short rows).
template <class A> static inline A coef(A c, std::int64_t) { return c; }
template <class A> static inline A coef(const A* c, std::int64_t j) { return c[j]; }

// Backward pass 2 over one row: dx = c_dz * dz + c_x * (x - m) + c0, dz of type D (float scratch or dy);
// c_dz: a scalar, or per element (CDZ = const A*).
template <class T, class D, class A, class CDZ>
void dx_scalar(const T* __restrict x, const D* __restrict dz, T* __restrict dx, std::int64_t i0, std::int64_t i1,
               A m, CDZ c_dz, A c_x, A c0) {
#pragma omp simd
  for (std::int64_t j = i0; j < i1; ++j)
    dx[j] = from_acc<T>(coef(c_dz, j) * to_acc(dz[j]) + (c_x * (to_acc(x[j]) - m) + c0));
}

template <bool NT, class T, class D, class A>
void dx_row(const T* __restrict x, const D* __restrict dz, T* __restrict dx, std::int64_t n, A m, A c_dz,
            A c_x, A c0) {
  lanes<NT>(dx, n, [&](std::int64_t j0, std::int64_t j1) { dx_scalar(x, dz, dx, j0, j1, m, c_dz, c_x, c0); },
      [&](auto i) { put_v16<NT>(dx + i, c_dz * load_v16(dz + i) + (c_x * (load_v16(x + i) - m) + c0)); });
}

// ---------------------------------------------------------------- channels-first
// Tasks are runs of consecutive groups (contiguous in memory): while a task computes on one group it
// prefetches the next into L2, where the group's own second pass also finds its data, so both
// groups have to fit: above kPrefetchBytes (a conservative share of an L2) there is no prefetching.
constexpr std::int64_t kGroupsPerTask = 4;

// Groups per parallel task: kGroupsPerTask, or more when groups are small (instance norm on 4x4
// maps has 16-element groups), so that a task holds at least ~16K elements.
inline std::int64_t groups_per_task(std::int64_t group) {
  return std::max<std::int64_t>(kGroupsPerTask, (std::int64_t(1) << 14) / std::max<std::int64_t>(group, 1));
}
constexpr std::int64_t kPrefetchBytes = std::int64_t(1) << 20;

// Prefetch distance in elements: one group ahead when the bytes a group keeps in L2 (per element:
// `bytes_per_elem` for the group being processed plus `next_bytes` for the one prefetched) fit.
inline std::int64_t prefetch_ahead(std::int64_t group, std::int64_t bytes_per_elem, std::int64_t next_bytes) {
  return group * (bytes_per_elem + next_bytes) <= kPrefetchBytes ? group : 0;
}

// The forward's arguments, typed, and the per-(n, c) affine of its second pass.
template <class T>
struct FwdView {
  using A = acc_t<T>;
  const T* x; T* y;
  A *mean, *rstd;
  const A *w, *b, *scale, *shift;
  bool one_plus_scale;
  explicit FwdView(const NormFwdArgs& p)
      : x(static_cast<const T*>(p.x)), y(static_cast<T*>(p.y)), mean(static_cast<A*>(p.mean)),
        rstd(static_cast<A*>(p.rstd)), w(static_cast<const A*>(p.w)), b(static_cast<const A*>(p.b)),
        scale(static_cast<const A*>(p.scale)), shift(static_cast<const A*>(p.shift)),
        one_plus_scale(p.s.one_plus_scale) {}
  // y = act((x - m) * a + bb) for channel c (row nc = n * C + c) of a group with 1/std r.
  void affine(std::int64_t nc, std::int64_t c, A r, A& a, A& bb) const {
    A sc = scale ? (one_plus_scale ? A(1) + scale[nc] : scale[nc]) : A(1);
    A wc = w ? w[c] : A(1), bc = b ? b[c] : A(0);
    a = r * wc * sc;
    bb = bc * sc + (shift ? shift[nc] : A(0));
  }
};

// Channels-first rows shorter than this are applied in runs of whole channels (up to kBlock elements)
// with per-element coefficients: a loop per row would cost more in setup than its elements.
constexpr std::int64_t kShortRow = 64;

// A run's per-element coefficients: coef(q, a, b) sets row q's two, copied to its HW elements of
// `a_out` and `b_out` (b_out may be null: one coefficient).
template <class A, class F>
static inline void spread(std::int64_t rows, std::int64_t HW, A* a_out, A* b_out, F coef) {
  for (std::int64_t q = 0; q < rows; ++q) {
    A a = A(0), b = A(0);
    coef(q, a, b);
    std::fill(a_out + q * HW, a_out + (q + 1) * HW, a);
    if (b_out) std::fill(b_out + q * HW, b_out + (q + 1) * HW, b);
  }
}

template <bool SILU, class T>
void fwd_cf(const NormFwdArgs& p, int threads) {
  using A = acc_t<T>;
  const NormShape& s = p.s;
  const FwdView<T> v(p);
  A *mean = v.mean, *rstd = v.rstd;
  const std::int64_t Cg = s.C / s.G, HW = s.HW;
  const std::int64_t NG = s.N * s.G, group = Cg * HW;
  const std::int64_t ahead = prefetch_ahead(group, 2 * sizeof(T), sizeof(T));  // x, y; the next x
  const std::int64_t gpt = groups_per_task(group);
  const std::int64_t run = kBlock / std::max<std::int64_t>(HW, 1);  // short rows per run
  parallel_for((NG + gpt - 1) / gpt, threads_for(NG * group, threads), [&](std::int64_t t) {
    const std::int64_t ng1 = std::min(NG, (t + 1) * gpt);
    alignas(64) A me[kBlock], ae[kBlock], be[kBlock];  // a run's coefficients (short rows)
    for (std::int64_t ng = t * gpt; ng < ng1; ++ng) {
      const std::int64_t n = ng / s.G, c0 = (ng % s.G) * Cg;
      const T* xg = v.x + ng * group;
      T* yg = v.y + ng * group;
      const Welford w = span_stats(xg, group);
      groups_from_channels(&w.mean, &w.m2, 1, 1, group, p.eps, &mean[ng], &rstd[ng]);
      const A m = mean[ng];
      A a, bb;
      if (HW >= kShortRow) {
        const std::int64_t pf = ng + 1 < ng1 ? ahead : 0;  // the task's next group, just after this one
        for (std::int64_t c = 0; c < Cg; ++c) {
          v.affine(n * s.C + c0 + c, c0 + c, rstd[ng], a, bb);
          apply_row<SILU>(xg + c * HW, yg + c * HW, pf, HW, m, a, bb);
        }
        continue;
      }
      std::fill(me, me + std::min(group, kBlock), m);
      for (std::int64_t c = 0; c < Cg; c += run) {
        const std::int64_t ce = std::min(Cg, c + run);
        spread(ce - c, HW, ae, be, [&](std::int64_t q, A& aq, A& bq) {
          v.affine(n * s.C + c0 + c + q, c0 + c + q, rstd[ng], aq, bq);
        });
        apply_coeffs_row<SILU>(xg + c * HW, yg + c * HW, me, ae, be, (ce - c) * HW);
      }
    }
  });
}

// Instance norm (one channel per group) on small maps: per row, group_stats' chain of double divides
// and a square root costs more than the row itself, so a batch of rows gets its sums first and its
// statistics in one loop the compiler vectorises (in the accumulation type: the sums are shifted by
// the row's first element, so nothing large cancels).
constexpr std::int64_t kRowBatch = 64;

#if defined(GK_V16)
// out[i] = the sum of the lanes of v[i], for 16 vectors at once: three rounds of shuffles and adds
// that pair up rows (45 instructions for 16 rows, where a reduction per row is ~8 dependent steps).
static inline v16f hsum_16_rows(const v16f* v) {
  v16f t[8], u[4], w[2];
  for (int i = 0; i < 8; ++i)  // per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3] of rows a, b
    t[i] = _mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]) + _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]);
  for (int i = 0; i < 4; ++i)  // per 128-bit lane: that lane's sums of rows 4i .. 4i+3
    u[i] = _mm512_shuffle_ps(t[2 * i], t[2 * i + 1], 0x44) + _mm512_shuffle_ps(t[2 * i], t[2 * i + 1], 0xEE);
  for (int i = 0; i < 2; ++i)  // adjacent 128-bit lanes added
    w[i] = _mm512_shuffle_f32x4(u[2 * i], u[2 * i + 1], 0x88) + _mm512_shuffle_f32x4(u[2 * i], u[2 * i + 1], 0xDD);
  return _mm512_shuffle_f32x4(w[0], w[1], 0x88) + _mm512_shuffle_f32x4(w[0], w[1], 0xDD);
}

// row_sums of the rows [0, nr) of HW (a multiple of 16, at most kSmallRow) elements each, 16 rows at a
// time (two passes over the L1-resident rows: their means, then the sums around them); returns how
// many rows it did (a whole number of 16s: the caller finishes the rest).
template <class T>
std::int64_t sums_by_16_rows(const T* x, std::int64_t HW, std::int64_t nr, float* K, float* s1, float* s2) {
  std::int64_t g = 0;
  const float inv = 1.0f / float(HW);
  for (; g + 16 <= nr; g += 16) {
    v16f p1[16], p2[16];
    for (int i = 0; i < 16; ++i) {  // the rows' means first: the sums below are taken around them
      const T* row = x + (g + i) * HW;
      v16f a = splat_v16(0);
      for (std::int64_t j = 0; j < HW; j += 16) a += load_v16(row + j);
      p1[i] = a;
    }
    _mm512_storeu_ps(K + g, hsum_16_rows(p1) * inv);
    for (int i = 0; i < 16; ++i) {
      const T* row = x + (g + i) * HW;
      const v16f k = splat_v16(K[g + i]);
      v16f a = splat_v16(0), b = a;
      for (std::int64_t j = 0; j < HW; j += 16) {
        const v16f d = load_v16(row + j) - k;
        a += d;
        b += d * d;
      }
      p1[i] = a;
      p2[i] = b;
    }
    _mm512_storeu_ps(s1 + g, hsum_16_rows(p1));
    _mm512_storeu_ps(s2 + g, hsum_16_rows(p2));
  }
  return g;
}
#endif

template <bool SILU, class T>
void fwd_small_rows(const NormFwdArgs& p, int threads) {
  using A = acc_t<T>;
  const NormShape& s = p.s;
  const FwdView<T> v(p);
  const T* x = v.x;
  const std::int64_t HW = s.HW, rows = s.N * s.C;
  const std::int64_t batches = (rows + kRowBatch - 1) / kRowBatch;
  const std::int64_t per_task = std::max<std::int64_t>(1, groups_per_task(HW) / kRowBatch);
  parallel_for((batches + per_task - 1) / per_task, threads_for(rows * HW, threads), [&](std::int64_t t) {
    for (std::int64_t bt = t * per_task; bt < std::min(batches, (t + 1) * per_task); ++bt) {
      const std::int64_t r0 = bt * kRowBatch, nr = std::min(kRowBatch, rows - r0);
      alignas(64) A K[kRowBatch], s1[kRowBatch], s2[kRowBatch];
      std::int64_t r = 0;
#if defined(GK_V16)
      if constexpr (vec16<T>())
        if (HW % 16 == 0) r = sums_by_16_rows(x + r0 * HW, HW, nr, K, s1, s2);
#endif
      for (; r < nr; ++r) {
        row_sums(x + (r0 + r) * HW, HW, &K[r], &s1[r], &s2[r]);
      }
      A* mr = v.mean + r0;
      A* rr = v.rstd + r0;
      instance_stats(K, s1, s2, nr, HW, p.eps, mr, rr);
      for (std::int64_t r = 0, c = r0 % s.C; r < nr; ++r, c = c + 1 == s.C ? 0 : c + 1) {
        const std::int64_t nc = r0 + r;
        A a, bb;
        v.affine(nc, c, rr[r], a, bb);
        apply_row<SILU, false>(x + nc * HW, v.y + nc * HW, 0, HW, mr[r], a, bb);
      }
    }
  });
}

// Backward pass 1 with per-element coefficients (a channels-last row; a run of short channels-first
// rows): s1[j] += dz, s2[j] += dz * (x - m).
template <bool SILU, class T, class A>
void cl_dz_sums_scalar(const T* __restrict xr, const T* __restrict dyr, const A* __restrict mn,
                       const A* __restrict an, const A* __restrict bn, A* __restrict s1, A* __restrict s2,
                       std::int64_t j0, std::int64_t j1) {
#pragma omp simd
  for (std::int64_t j = j0; j < j1; ++j) {
    A xc = to_acc(xr[j]) - mn[j];
    A d = dz_of<SILU>(to_acc(dyr[j]), xc * an[j] + bn[j]);
    s1[j] += d;
    s2[j] += d * xc;
  }
}

template <bool SILU, class T, class A>
void cl_dz_sums_row(const T* __restrict xr, const T* __restrict dyr, const A* __restrict mn,
                    const A* __restrict an, const A* __restrict bn, A* __restrict s1, A* __restrict s2,
                    std::int64_t C) {
  lanes<false>(s1, C,
      [&](std::int64_t j0, std::int64_t j1) { cl_dz_sums_scalar<SILU>(xr, dyr, mn, an, bn, s1, s2, j0, j1); },
      [&](auto c) {
        auto xc = load_v16(xr + c) - load_v16(mn + c);
        auto d = dz_of<SILU>(load_v16(dyr + c), xc * load_v16(an + c) + load_v16(bn + c));
        store_v16(s1 + c, load_v16(s1 + c) + d);
        store_v16(s2 + c, load_v16(s2 + c) + d * xc);
      });
}

// The backward's rows shorter than this go in runs as the forward's: its per-row passes are longer
// (two sums, then dx), so runs lose sooner (measured on AVX2: faster up to 20 elements, slower from 24).
constexpr std::int64_t kShortRowBwd = 24;

template <bool SILU, bool NT, class T>
void bwd_cf(const NormBwdArgs& p, int threads) {
  using A = acc_t<T>;
  const NormShape& s = p.s;
  const T *x = static_cast<const T*>(p.x), *dy = static_cast<const T*>(p.dy);
  T* dx = static_cast<T*>(p.dx);
  const A *mean = static_cast<const A*>(p.mean), *rstd = static_cast<const A*>(p.rstd);
  A *sdz = static_cast<A*>(p.sum_dz), *sdzx = static_cast<A*>(p.sum_dz_xhat);
  Coeffs<A> k = make_coeffs<A>(s, mean, rstd, static_cast<const A*>(p.w), static_cast<const A*>(p.b),
                               static_cast<const A*>(p.scale), static_cast<const A*>(p.shift));
  const std::int64_t Cg = s.C / s.G, HW = s.HW;
  const std::int64_t NG = s.N * s.G, group = Cg * HW;
  // in L2: x, dy, dz (and dx when cached); the next x, dy
  const std::int64_t ahead = prefetch_ahead(group, 2 * sizeof(T) + sizeof(A) + (NT ? 0 : sizeof(T)), 2 * sizeof(T));
  const std::int64_t gpt = groups_per_task(group);
  const std::int64_t run = kBlock / std::max<std::int64_t>(HW, 1);  // short rows per run
  parallel_for((NG + gpt - 1) / gpt, threads_for(NG * group, threads), [&](std::int64_t t) {
    const std::int64_t ng1 = std::min(NG, (t + 1) * gpt);
    // With SiLU, dz of the whole group is kept (L2-resident) for the second pass instead of
    // recomputing exp; the buffer is reused across calls (a fresh large allocation per task costs
    // page faults).
    alignas(64) A me[kBlock], ae[kBlock], be[kBlock], d1[kBlock], d2[kBlock];  // a run of short rows
    A* dz = nullptr;
    if (SILU) {
      thread_local std::vector<A> dz_buf;
      if (dz_buf.size() < static_cast<size_t>(group)) dz_buf.resize(group);
      dz = dz_buf.data();
    }
    for (std::int64_t ng = t * gpt; ng < ng1; ++ng) {
      const std::int64_t n = ng / s.G, g = ng % s.G, nc0 = n * s.C + g * Cg;
      const std::int64_t pf = ng + 1 < ng1 ? ahead : 0;  // the task's next group, just after this one
      const A m = mean[ng], r = rstd[ng];
      double gsum_dz = 0, gsum_dzx = 0;
      const auto add = [&](std::int64_t nc, double s1, double s2) {
        s2 *= double(r);  // sum dz * (x - m) -> sum dz * xhat
        sdz[nc] = A(s1); sdzx[nc] = A(s2);
        gsum_dz += double(k.gamma[nc]) * s1;
        gsum_dzx += double(k.gamma[nc]) * s2;
      };
      if (HW >= kShortRowBwd) {
        for (std::int64_t c = 0; c < Cg; ++c) {
          double s1, s2;
          dz_row<SILU>(x + (nc0 + c) * HW, dy + (nc0 + c) * HW, dz + (SILU ? c * HW : 0), pf, HW, m, k.a[nc0 + c],
                       k.bb[nc0 + c], &s1, &s2);
          add(nc0 + c, s1, s2);
        }
      } else {  // runs of short rows, as the forward: dz and dz * (x - m) per element, then per row
        std::fill(me, me + std::min(group, kBlock), m);
        for (std::int64_t c = 0; c < Cg; c += run) {
          const std::int64_t ce = std::min(Cg, c + run), e = (ce - c) * HW;
          spread(ce - c, HW, ae, be, [&](std::int64_t q, A& aq, A& bq) {
            aq = k.a[nc0 + c + q];
            bq = k.bb[nc0 + c + q];
          });
          std::fill(d1, d1 + e, A(0));
          std::fill(d2, d2 + e, A(0));
          cl_dz_sums_row<SILU>(x + (nc0 + c) * HW, dy + (nc0 + c) * HW, me, ae, be, d1, d2, e);
          if (SILU) std::copy(d1, d1 + e, dz + c * HW);
          for (std::int64_t q = c; q < ce; ++q) {
            A s1 = 0, s2 = 0;
            for (std::int64_t j = (q - c) * HW; j < (q - c + 1) * HW; ++j) { s1 += d1[j]; s2 += d2[j]; }
            add(nc0 + q, s1, s2);
          }
        }
      }
      // dx = r * (gamma * dz - mB - xhat * mA), mB/mA the group means of gamma*dz and gamma*dz*xhat
      const double inv = 1.0 / double(Cg * HW);
      const A c0 = A(-double(r) * gsum_dz * inv), c_x = A(-double(r) * double(r) * gsum_dzx * inv);
      const T* dzsrc_t = dy + nc0 * HW;  // dz: the scratch with SiLU, else dy
      if (HW >= kShortRowBwd) {
        for (std::int64_t c = 0; c < Cg; ++c) {
          const A c_dz = r * k.gamma[nc0 + c];
          if (SILU) dx_row<NT>(x + (nc0 + c) * HW, dz + c * HW, dx + (nc0 + c) * HW, HW, m, c_dz, c_x, c0);
          else dx_row<NT>(x + (nc0 + c) * HW, dzsrc_t + c * HW, dx + (nc0 + c) * HW, HW, m, c_dz, c_x, c0);
        }
      } else {
        for (std::int64_t c = 0; c < Cg; c += run) {
          const std::int64_t ce = std::min(Cg, c + run), e = (ce - c) * HW;
          spread(ce - c, HW, ae, static_cast<A*>(nullptr), [&](std::int64_t q, A& aq, A&) { aq = r * k.gamma[nc0 + c + q]; });
          const T* xr = x + (nc0 + c) * HW;
          T* dxr = dx + (nc0 + c) * HW;
          if (SILU) dx_scalar(xr, dz + c * HW, dxr, 0, e, m, static_cast<const A*>(ae), c_x, c0);
          else dx_scalar(xr, dzsrc_t + c * HW, dxr, 0, e, m, static_cast<const A*>(ae), c_x, c0);
        }
      }
    }
    end_streams<NT>();
  });
}

// ---------------------------------------------------------------- channels-last
// Rows of C contiguous channels; tasks are (n, chunk of rows). Per-channel coefficients are arrays
// that the loops over c read alongside the data.
struct Chunks {
  std::int64_t rows_per, count;
  Chunks(std::int64_t HW, int threads) {
    std::int64_t want = std::max<std::int64_t>(1, std::int64_t(threads) * 4);
    rows_per = std::max<std::int64_t>(8, (HW + want - 1) / want);
    count = (HW + rows_per - 1) / rows_per;
  }
};

// s1[c] += x[c] - K[c], s2[c] += (x[c] - K[c])^2 over one row.
template <class T, class A>
void cl_sums_scalar(const T* __restrict xr, const A* __restrict K, A* __restrict s1, A* __restrict s2,
                    std::int64_t j0, std::int64_t j1) {
#pragma omp simd
  for (std::int64_t j = j0; j < j1; ++j) {
    A d = to_acc(xr[j]) - K[j];
    s1[j] += d;
    s2[j] += d * d;
  }
}

template <class T, class A>
void cl_sums_row(const T* __restrict xr, const A* __restrict K, A* __restrict s1, A* __restrict s2, std::int64_t C) {
  lanes<false>(s1, C, [&](std::int64_t j0, std::int64_t j1) { cl_sums_scalar(xr, K, s1, s2, j0, j1); },
      [&](auto c) {
        auto d = load_v16(xr + c) - load_v16(K + c);
        store_v16(s1 + c, load_v16(s1 + c) + d);
        store_v16(s2 + c, load_v16(s2 + c) + d * d);
      });
}

// s0[c] += x[c] over one row.
template <class T, class A>
void cl_add_scalar(const T* __restrict xr, A* __restrict s0, std::int64_t j0, std::int64_t j1) {
#pragma omp simd
  for (std::int64_t j = j0; j < j1; ++j) s0[j] += to_acc(xr[j]);
}

template <class T, class A>
void cl_add_row(const T* __restrict xr, A* __restrict s0, std::int64_t C) {
  lanes<false>(s0, C, [&](std::int64_t j0, std::int64_t j1) { cl_add_scalar(xr, s0, j0, j1); },
      [&](auto c) { store_v16(s0 + c, load_v16(s0 + c) + load_v16(xr + c)); });
}

// Rows per block of the channels-last statistics: read twice while in L1/L2 (their per-channel means,
// then the sums around them), then merged into the running per-channel statistics.
constexpr std::int64_t kClRows = 16;

// Per-channel (mean, M2) of the rows [r0, r1) of one sample (C channels a row), into mean[C], m2[C].
template <class T, class A>
void cl_stats(const T* x, std::int64_t C, std::int64_t r0, std::int64_t r1, double* __restrict mean,
              double* __restrict m2) {
  std::vector<A> k(C), b1(C), b2(C);
  std::fill(mean, mean + C, 0.0);
  std::fill(m2, m2 + C, 0.0);
  double cnt = 0;
  for (std::int64_t rb = r0; rb < r1; rb += kClRows) {
    const std::int64_t re = std::min(r1, rb + kClRows);
    const A inv = A(1) / A(re - rb);
    std::fill(k.begin(), k.end(), A(0));
    for (std::int64_t r = rb; r < re; ++r) cl_add_row(x + r * C, k.data(), C);
    for (std::int64_t c = 0; c < C; ++c) k[c] *= inv;
    std::fill(b1.begin(), b1.end(), A(0));
    std::fill(b2.begin(), b2.end(), A(0));
    for (std::int64_t r = rb; r < re; ++r) cl_sums_row(x + r * C, k.data(), b1.data(), b2.data(), C);
    const double nb = double(re - rb), tot = cnt + nb, wb = nb / tot, wx = cnt * nb / tot;
#pragma omp simd
    for (std::int64_t c = 0; c < C; ++c) {  // the block's own (mean, M2), merged into the running ones
      const double d = double(b1[c]) / nb;
      chan_merge(mean[c], m2[c], double(k[c]) + d, std::max(0.0, double(b2[c]) - double(b1[c]) * d), wb, wx);
    }
    cnt = tot;
  }
}

template <bool SILU, class T>
void fwd_cl(const NormFwdArgs& p, int threads) {
  using A = acc_t<T>;
  const NormShape& s = p.s;
  const T* x = static_cast<const T*>(p.x);
  T* y = static_cast<T*>(p.y);
  A *mean = static_cast<A*>(p.mean), *rstd = static_cast<A*>(p.rstd);
  const std::int64_t C = s.C, Cg = C / s.G, HW = s.HW;
  threads = threads_for(s.N * HW * C, threads);
  Chunks ch(HW, threads);
  // Per (n, chunk of rows): per-channel (mean, M2), merged over the chunks with Chan's formula into
  // the first chunk's (zeros when HW = 0: no chunk).
  std::vector<double> part(s.N * std::max<std::int64_t>(ch.count, 1) * C * 2);
  parallel_for(s.N * ch.count, threads, [&](std::int64_t t) {
    std::int64_t n = t / ch.count, r0 = (t % ch.count) * ch.rows_per, r1 = std::min(HW, r0 + ch.rows_per);
    cl_stats<T, A>(x + n * HW * C, C, r0, r1, part.data() + t * C * 2, part.data() + t * C * 2 + C);
  });
  for (std::int64_t n = 0; n < s.N; ++n) {
    double *mc = part.data() + n * ch.count * C * 2, *m2 = mc + C;
    double cnt = double(std::min(HW, ch.rows_per));
    for (std::int64_t k = 1; k < ch.count; ++k) {
      const double* pp = mc + k * C * 2;
      const double rows = double(std::min(HW, (k + 1) * ch.rows_per) - k * ch.rows_per), tot = cnt + rows;
      const double wb = rows / tot, wx = cnt * rows / tot;
#pragma omp simd
      for (std::int64_t c = 0; c < C; ++c) chan_merge(mc[c], m2[c], pp[c], pp[C + c], wb, wx);
      cnt = tot;
    }
    groups_from_channels(mc, m2, s.G, Cg, HW, p.eps, mean + n * s.G, rstd + n * s.G);
  }
  const Coeffs<A> k = make_coeffs<A>(s, mean, rstd, static_cast<const A*>(p.w), static_cast<const A*>(p.b),
                                     static_cast<const A*>(p.scale), static_cast<const A*>(p.shift));
  parallel_for(s.N * ch.count, threads, [&](std::int64_t t) {
    std::int64_t n = t / ch.count, r0 = (t % ch.count) * ch.rows_per, r1 = std::min(HW, r0 + ch.rows_per);
    for (std::int64_t r = r0; r < r1; ++r)
      apply_coeffs_row<SILU>(x + (n * HW + r) * C, y + (n * HW + r) * C, k.m.data() + n * C, k.a.data() + n * C,
                             k.bb.data() + n * C, C);
  });
}

// Per-(n, c) coefficients of the backward's second pass: dx = k_dz * dz + k_x * (x - m) + k0.
template <class A>
struct DxCoeffs {
  std::vector<A> k_dz, k_x, k0;
};

// Backward pass 2 over one row, dz recomputed (a tensor-sized dz scratch would not stay in cache, and
// writing and reading it back costs about as much as the recomputation).
template <bool SILU, class T, class A>
void cl_dx_scalar(const T* __restrict xr, const T* __restrict dyr, T* __restrict dxr, const A* __restrict mn,
                  const A* __restrict an, const A* __restrict bn, const A* __restrict k_dz,
                  const A* __restrict k_x, const A* __restrict k0, std::int64_t j0, std::int64_t j1) {
#pragma omp simd
  for (std::int64_t j = j0; j < j1; ++j) {
    A xc = to_acc(xr[j]) - mn[j];
    A d = dz_of<SILU>(to_acc(dyr[j]), xc * an[j] + bn[j]);
    dxr[j] = from_acc<T>(k_dz[j] * d + (k_x[j] * xc + k0[j]));
  }
}

template <bool SILU, class T, class A>
void cl_dx_row(const T* __restrict xr, const T* __restrict dyr, T* __restrict dxr, const A* __restrict mn,
               const A* __restrict an, const A* __restrict bn, const A* __restrict k_dz,
               const A* __restrict k_x, const A* __restrict k0, std::int64_t C) {
  lanes<false>(dxr, C,
      [&](std::int64_t j0, std::int64_t j1) { cl_dx_scalar<SILU>(xr, dyr, dxr, mn, an, bn, k_dz, k_x, k0, j0, j1); },
      [&](auto c) {
        auto xc = load_v16(xr + c) - load_v16(mn + c);
        auto d = dz_of<SILU>(load_v16(dyr + c), xc * load_v16(an + c) + load_v16(bn + c));
        store_v16(dxr + c, load_v16(k_dz + c) * d + (load_v16(k_x + c) * xc + load_v16(k0 + c)));
      });
}

template <bool SILU, class T>
void bwd_cl(const NormBwdArgs& p, int threads) {
  using A = acc_t<T>;
  const NormShape& s = p.s;
  const T *x = static_cast<const T*>(p.x), *dy = static_cast<const T*>(p.dy);
  T* dx = static_cast<T*>(p.dx);
  const A *mean = static_cast<const A*>(p.mean), *rstd = static_cast<const A*>(p.rstd);
  A *sdz = static_cast<A*>(p.sum_dz), *sdzx = static_cast<A*>(p.sum_dz_xhat);
  Coeffs<A> k = make_coeffs<A>(s, mean, rstd, static_cast<const A*>(p.w), static_cast<const A*>(p.b),
                               static_cast<const A*>(p.scale), static_cast<const A*>(p.shift));
  const std::int64_t C = s.C, Cg = C / s.G, HW = s.HW;
  threads = threads_for(s.N * HW * C, threads);
  Chunks ch(HW, threads);
  std::vector<A> part(s.N * ch.count * C * 2);
  parallel_for(s.N * ch.count, threads, [&](std::int64_t t) {
    std::int64_t n = t / ch.count, r0 = (t % ch.count) * ch.rows_per, r1 = std::min(HW, r0 + ch.rows_per);
    std::vector<A> acc(2 * C, A(0));  // the task's own buffer, as in the forward
    for (std::int64_t r = r0; r < r1; ++r)
      cl_dz_sums_row<SILU>(x + (n * HW + r) * C, dy + (n * HW + r) * C, k.m.data() + n * C, k.a.data() + n * C,
                           k.bb.data() + n * C, acc.data(), acc.data() + C, C);
    std::copy(acc.begin(), acc.end(), part.begin() + t * C * 2);
  });
  // Per-channel sums (sum dz * (x - m) times rstd: sum dz * xhat), then the group means mB, mA of
  // gamma*dz and gamma*dz*xhat folded into the second pass's coefficients:
  //   dx = r * (gamma * dz - mB - xhat * mA) = (r*gamma) dz + (-r*r*mA) (x - m) + (-r*mB).
  DxCoeffs<A> q;
  q.k_dz.resize(s.N * C); q.k_x.resize(s.N * C); q.k0.resize(s.N * C);
  for (std::int64_t n = 0; n < s.N; ++n) {
    for (std::int64_t c = 0; c < C; ++c) {
      double a1 = 0, a2 = 0;
      for (std::int64_t kk = 0; kk < ch.count; ++kk) {
        const A* pp = part.data() + (n * ch.count + kk) * C * 2;
        a1 += pp[c]; a2 += pp[C + c];
      }
      sdz[n * C + c] = A(a1);
      sdzx[n * C + c] = A(a2 * double(rstd[n * s.G + c / Cg]));
    }
    for (std::int64_t g = 0; g < s.G; ++g) {
      double gb = 0, ga = 0;
      for (std::int64_t c = g * Cg; c < (g + 1) * Cg; ++c) {
        gb += double(k.gamma[n * C + c]) * sdz[n * C + c];
        ga += double(k.gamma[n * C + c]) * sdzx[n * C + c];
      }
      const double r = rstd[n * s.G + g], inv = 1.0 / double(Cg * HW);
      for (std::int64_t c = g * Cg; c < (g + 1) * Cg; ++c) {
        q.k_dz[n * C + c] = A(r * double(k.gamma[n * C + c]));
        q.k_x[n * C + c] = A(-r * r * ga * inv);
        q.k0[n * C + c] = A(-r * gb * inv);
      }
    }
  }
  parallel_for(s.N * ch.count, threads, [&](std::int64_t t) {
    std::int64_t n = t / ch.count, r0 = (t % ch.count) * ch.rows_per, r1 = std::min(HW, r0 + ch.rows_per);
    for (std::int64_t r = r0; r < r1; ++r)
      cl_dx_row<SILU>(x + (n * HW + r) * C, dy + (n * HW + r) * C, dx + (n * HW + r) * C, k.m.data() + n * C,
                      k.a.data() + n * C, k.bb.data() + n * C, q.k_dz.data() + n * C, q.k_x.data() + n * C,
                      q.k0.data() + n * C, C);
  });
}

// The channels-first backward writes dx with non-temporal stores when it is at least this many bytes:
// a tensor this large would mostly leave the cache before it is read again, and ordinary stores read
// every line first. Measured: smaller outputs are faster cached; the forward's y gains nothing in the
// calls that follow one another, and is faster cached when run alone (also for its consumer); the
// channels-last rows, which re-read their input from memory in the second pass, lose.
constexpr std::int64_t kStreamBytes = std::int64_t(4) << 20;

template <class T> bool stream_output(const NormShape& s) {
  return vec16<T>() && !s.channels_last && s.N * s.C * s.HW * std::int64_t(sizeof(T)) >= kStreamBytes;
}

// Calls f(T{}, std::bool_constant<silu>{}) for the run-time dtype and activation.
template <class F>
void dispatch(int dtype, bool silu, F&& f) {
  by_dtype(dtype, "group_norm", [&](auto t) {
    if (silu) f(t, std::true_type{}); else f(t, std::false_type{});
  });
}

}  // namespace

void group_norm_fwd(const Flat& a, int threads) {
  NormFwdArgs p(a);
  dispatch(a.dtype, p.s.silu, [&](auto t, auto silu) {
    using T = decltype(t);
    if (p.s.channels_last) fwd_cl<silu.value, T>(p, threads);
    else if (p.s.G == p.s.C && p.s.HW <= kSmallRow) fwd_small_rows<silu.value, T>(p, threads);
    else fwd_cf<silu.value, T>(p, threads);
  });
}

void group_norm_bwd(const Flat& a, int threads) {
  NormBwdArgs p(a);
  dispatch(a.dtype, p.s.silu, [&](auto t, auto silu) {
    using T = decltype(t);
    if (p.s.channels_last) bwd_cl<silu.value, T>(p, threads);
    else if (stream_output<T>(p.s)) bwd_cf<silu.value, true, T>(p, threads);
    else bwd_cf<silu.value, false, T>(p, threads);
  });
}

}  // namespace GK_ISA
}  // namespace gk
