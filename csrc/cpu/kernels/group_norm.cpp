// CPU group/instance normalisation (+ optional FiLM and SiLU), forward and backward.
// Semantics and argument order: csrc/common/norm_args.h.
//
// Statistics are exact for large means: each channel row is summed around its own first element
// (shifted sums), and channels are merged into their group with Chan's formula, in the
// accumulation type. Channels-first works on one (n, group) per task so that the backward's second
// pass finds the group in L2; channels-last works on (n, row-chunk) tasks vectorised across channels.
#include <algorithm>
#include <vector>

#include "common/norm_args.h"
#include "cpu/parallel.h"
#include "cpu/vec_math.h"

namespace gk {
namespace GK_ISA {
namespace {

// Combines per-channel shifted sums (shift K, s1 = sum(x-K), s2 = sum((x-K)^2), cnt elements each)
// of the Cg channels of one group into the group's mean and 1/sqrt(var + eps).
template <class A>
void group_stats(const A* K, const A* s1, const A* s2, std::int64_t Cg, std::int64_t cnt, double eps,
                 A* mean_out, A* rstd_out) {
  double mean_sum = 0, m2 = 0;
  std::vector<double> means(Cg);
  for (std::int64_t c = 0; c < Cg; ++c) {
    double d = double(s1[c]) / double(cnt);
    means[c] = double(K[c]) + d;
    mean_sum += means[c];
    m2 += std::max(0.0, double(s2[c]) - double(s1[c]) * d);
  }
  double mean = mean_sum / double(Cg);
  for (std::int64_t c = 0; c < Cg; ++c) m2 += double(cnt) * (means[c] - mean) * (means[c] - mean);
  double var = m2 / double(cnt * Cg);
  *mean_out = A(mean);
  *rstd_out = A(1.0 / std::sqrt(var + eps));
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

// dL/dz from dL/dy at pre-activation z (the activation is a compile-time choice so loops vectorise).
template <bool SILU, class A> static inline A dz_of(A dy, A z) {
  if (!SILU) return dy;
  A sg = A(1) / (A(1) + exp_f(-z));
  return dy * (sg * (A(1) + z * (A(1) - sg)));
}

constexpr std::int64_t kBlock = 512;  // float partial sums per block, then accumulated in double

// Shifted sums of one contiguous row of n elements around K.
template <class T, class A>
void row_sums(const T* x, std::int64_t n, A K, A* s1_out, A* s2_out) {
  double s1 = 0, s2 = 0;
  for (std::int64_t i0 = 0; i0 < n; i0 += kBlock) {
    std::int64_t i1 = std::min(n, i0 + kBlock);
    A b1 = 0, b2 = 0;
#pragma omp simd reduction(+ : b1, b2)
    for (std::int64_t i = i0; i < i1; ++i) {
      A d = to_acc(x[i]) - K;
      b1 += d;
      b2 += d * d;
    }
    s1 += b1; s2 += b2;
  }
  *s1_out = A(s1); *s2_out = A(s2);
}

template <class T, class A>
void apply_row(const T* x, T* y, std::int64_t n, A m, A a, A bb, bool silu) {
  if (silu) {
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) {
      A z = (to_acc(x[i]) - m) * a + bb;
      y[i] = from_acc<T>(z / (A(1) + exp_f(-z)));
    }
  } else {
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) y[i] = from_acc<T>((to_acc(x[i]) - m) * a + bb);
  }
}

// ---------------------------------------------------------------- channels-first
template <class T>
void fwd_cf(const NormFwdArgs& p, int threads) {
  using A = acc_t<T>;
  const NormShape& s = p.s;
  const T* x = static_cast<const T*>(p.x);
  T* y = static_cast<T*>(p.y);
  A* mean = static_cast<A*>(p.mean);
  A* rstd = static_cast<A*>(p.rstd);
  const A *w = static_cast<const A*>(p.w), *b = static_cast<const A*>(p.b);
  const A *scale = static_cast<const A*>(p.scale), *shift = static_cast<const A*>(p.shift);
  const std::int64_t Cg = s.C / s.G, HW = s.HW;
  parallel_for(s.N * s.G, threads, [&](std::int64_t ng) {
    std::int64_t n = ng / s.G, g = ng % s.G;
    std::vector<A> K(Cg), s1(Cg), s2(Cg);
    for (std::int64_t c = 0; c < Cg; ++c) {
      const T* row = x + (n * s.C + g * Cg + c) * HW;
      K[c] = to_acc(row[0]);
      row_sums(row, HW, K[c], &s1[c], &s2[c]);
    }
    group_stats(K.data(), s1.data(), s2.data(), Cg, HW, p.eps, &mean[ng], &rstd[ng]);
    for (std::int64_t c = g * Cg; c < (g + 1) * Cg; ++c) {
      std::int64_t nc = n * s.C + c;
      A sc = scale ? (s.one_plus_scale ? A(1) + scale[nc] : scale[nc]) : A(1);
      A wc = w ? w[c] : A(1), bc = b ? b[c] : A(0);
      A a = rstd[ng] * wc * sc;
      A bb = bc * sc + (shift ? shift[nc] : A(0));
      apply_row(x + nc * HW, y + nc * HW, HW, mean[ng], a, bb, s.silu);
    }
  });
}

template <class T>
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
  parallel_for(s.N * s.G, threads, [&](std::int64_t ng) {
    std::int64_t n = ng / s.G, g = ng % s.G;
    // dz of the whole group, kept (L2-resident) for the second pass instead of recomputing exp;
    // the buffer is reused across calls (a fresh large allocation per task costs page faults).
    thread_local std::vector<A> dz_buf;
    if (dz_buf.size() < static_cast<size_t>(Cg * HW)) dz_buf.resize(Cg * HW);
    A* dz = dz_buf.data();
    A m = mean[ng], r = rstd[ng];
    double gsum_dz = 0, gsum_dzx = 0;
    for (std::int64_t c = 0; c < Cg; ++c) {
      std::int64_t nc = n * s.C + g * Cg + c;
      const T *xr = x + nc * HW, *dyr = dy + nc * HW;
      A* __restrict dzr = dz + c * HW;
      A a = k.a[nc], bb = k.bb[nc];
      double s1 = 0, s2 = 0;
      for (std::int64_t i0 = 0; i0 < HW; i0 += kBlock) {
        std::int64_t i1 = std::min(HW, i0 + kBlock);
        A b1 = 0, b2 = 0;
        if (s.silu) {
#pragma omp simd reduction(+ : b1, b2)
          for (std::int64_t i = i0; i < i1; ++i) {
            A xc = to_acc(xr[i]) - m;
            A z = xc * a + bb;
            A sg = A(1) / (A(1) + exp_f(-z));
            A d = to_acc(dyr[i]) * (sg * (A(1) + z * (A(1) - sg)));
            dzr[i] = d;
            b1 += d;
            b2 += d * (xc * r);
          }
        } else {
#pragma omp simd reduction(+ : b1, b2)
          for (std::int64_t i = i0; i < i1; ++i) {
            A d = to_acc(dyr[i]);
            dzr[i] = d;
            b1 += d;
            b2 += d * ((to_acc(xr[i]) - m) * r);
          }
        }
        s1 += b1; s2 += b2;
      }
      sdz[nc] = A(s1); sdzx[nc] = A(s2);
      gsum_dz += double(k.gamma[nc]) * s1;
      gsum_dzx += double(k.gamma[nc]) * s2;
    }
    const double inv = 1.0 / double(Cg * HW);
    const A mB = A(gsum_dz * inv), mA = A(gsum_dzx * inv);
    for (std::int64_t c = 0; c < Cg; ++c) {
      std::int64_t nc = n * s.C + g * Cg + c;
      const T* xr = x + nc * HW;
      T* dxr = dx + nc * HW;
      const A* __restrict dzr = dz + c * HW;
      A gm = k.gamma[nc];
#pragma omp simd
      for (std::int64_t i = 0; i < HW; ++i)
        dxr[i] = from_acc<T>(r * (gm * dzr[i] - mB - (to_acc(xr[i]) - m) * r * mA));
    }
  });
}

// ---------------------------------------------------------------- channels-last
// Rows of C contiguous channels; tasks are (n, chunk of rows).
struct Chunks {
  std::int64_t rows_per, count;
  Chunks(std::int64_t HW, int threads) {
    std::int64_t want = std::max<std::int64_t>(1, std::int64_t(threads) * 4);
    rows_per = std::max<std::int64_t>(8, (HW + want - 1) / want);
    count = (HW + rows_per - 1) / rows_per;
  }
};

template <class T>
void fwd_cl(const NormFwdArgs& p, int threads) {
  using A = acc_t<T>;
  const NormShape& s = p.s;
  const T* x = static_cast<const T*>(p.x);
  T* y = static_cast<T*>(p.y);
  A *mean = static_cast<A*>(p.mean), *rstd = static_cast<A*>(p.rstd);
  const std::int64_t C = s.C, Cg = C / s.G, HW = s.HW;
  Chunks ch(HW, threads);
  // Shift per (n, c): the channel's value in row 0, so chunk sums add up directly.
  std::vector<A> part(s.N * ch.count * C * 2);
  parallel_for(s.N * ch.count, threads, [&](std::int64_t t) {
    std::int64_t n = t / ch.count, r0 = (t % ch.count) * ch.rows_per, r1 = std::min(HW, r0 + ch.rows_per);
    const T* K = x + n * HW * C;
    std::vector<A> s1(C, A(0)), s2(C, A(0));
    for (std::int64_t r = r0; r < r1; ++r) {
      const T* row = x + (n * HW + r) * C;
#pragma omp simd
      for (std::int64_t c = 0; c < C; ++c) {
        A d = to_acc(row[c]) - to_acc(K[c]);
        s1[c] += d;
        s2[c] += d * d;
      }
    }
    A* out = part.data() + t * C * 2;
    std::copy(s1.begin(), s1.end(), out);
    std::copy(s2.begin(), s2.end(), out + C);
  });
  std::vector<A> a, bb, mc;
  {
    std::vector<A> K(C), s1(C), s2(C);
    for (std::int64_t n = 0; n < s.N; ++n) {
      std::fill(s1.begin(), s1.end(), A(0));
      std::fill(s2.begin(), s2.end(), A(0));
      for (std::int64_t c = 0; c < C; ++c) K[c] = to_acc(x[n * HW * C + c]);
      for (std::int64_t k = 0; k < ch.count; ++k) {
        const A* pp = part.data() + (n * ch.count + k) * C * 2;
        for (std::int64_t c = 0; c < C; ++c) { s1[c] += pp[c]; s2[c] += pp[C + c]; }
      }
      for (std::int64_t g = 0; g < s.G; ++g)
        group_stats(K.data() + g * Cg, s1.data() + g * Cg, s2.data() + g * Cg, Cg, HW, p.eps,
                    &mean[n * s.G + g], &rstd[n * s.G + g]);
    }
    Coeffs<A> k = make_coeffs<A>(s, mean, rstd, static_cast<const A*>(p.w), static_cast<const A*>(p.b),
                                 static_cast<const A*>(p.scale), static_cast<const A*>(p.shift));
    a.swap(k.a); bb.swap(k.bb); mc.swap(k.m);
  }
  parallel_for(s.N * ch.count, threads, [&](std::int64_t t) {
    std::int64_t n = t / ch.count, r0 = (t % ch.count) * ch.rows_per, r1 = std::min(HW, r0 + ch.rows_per);
    const A *an = a.data() + n * C, *bn = bb.data() + n * C, *mn = mc.data() + n * C;
    for (std::int64_t r = r0; r < r1; ++r) {
      const T* xr = x + (n * HW + r) * C;
      T* yr = y + (n * HW + r) * C;
      if (s.silu) {
#pragma omp simd
        for (std::int64_t c = 0; c < C; ++c) {
          A z = (to_acc(xr[c]) - mn[c]) * an[c] + bn[c];
          yr[c] = from_acc<T>(z / (A(1) + exp_f(-z)));
        }
      } else {
#pragma omp simd
        for (std::int64_t c = 0; c < C; ++c) yr[c] = from_acc<T>((to_acc(xr[c]) - mn[c]) * an[c] + bn[c]);
      }
    }
  });
}

template <class T>
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
  Chunks ch(HW, threads);
  // Per-(n, c) rstd broadcast from the groups, so inner loops run over contiguous channels.
  std::vector<A> rc(s.N * C);
  for (std::int64_t nc = 0; nc < s.N * C; ++nc) rc[nc] = rstd[(nc / C) * s.G + (nc % C) / Cg];
  const std::vector<A>& mc = k.m;
  std::vector<A> part(s.N * ch.count * C * 2);
  parallel_for(s.N * ch.count, threads, [&](std::int64_t t) {
    std::int64_t n = t / ch.count, r0 = (t % ch.count) * ch.rows_per, r1 = std::min(HW, r0 + ch.rows_per);
    A* out = part.data() + t * C * 2;
    std::fill(out, out + 2 * C, A(0));
    auto rows = [&](auto silu) {
      const A *__restrict an = k.a.data() + n * C, *__restrict bn = k.bb.data() + n * C;
      const A *__restrict mn = mc.data() + n * C, *__restrict rn = rc.data() + n * C;
      A *__restrict s1 = out, *__restrict s2 = out + C;
      for (std::int64_t r = r0; r < r1; ++r) {
        const T *__restrict xr = x + (n * HW + r) * C, *__restrict dyr = dy + (n * HW + r) * C;
#pragma omp simd
        for (std::int64_t c = 0; c < C; ++c) {
          A xc = to_acc(xr[c]) - mn[c];
          A d = dz_of<decltype(silu)::value>(to_acc(dyr[c]), xc * an[c] + bn[c]);
          s1[c] += d;
          s2[c] += d * (xc * rn[c]);
        }
      }
    };
    if (s.silu) rows(std::true_type{}); else rows(std::false_type{});
  });
  // Group means of gamma*dz and gamma*dz*xhat, broadcast back per channel.
  std::vector<A> mB(s.N * C), mA(s.N * C);
  for (std::int64_t n = 0; n < s.N; ++n) {
    for (std::int64_t c = 0; c < C; ++c) {
      double a1 = 0, a2 = 0;
      for (std::int64_t kk = 0; kk < ch.count; ++kk) {
        const A* pp = part.data() + (n * ch.count + kk) * C * 2;
        a1 += pp[c]; a2 += pp[C + c];
      }
      sdz[n * C + c] = A(a1); sdzx[n * C + c] = A(a2);
    }
    for (std::int64_t g = 0; g < s.G; ++g) {
      double gb = 0, ga = 0;
      for (std::int64_t c = g * Cg; c < (g + 1) * Cg; ++c) {
        gb += double(k.gamma[n * C + c]) * sdz[n * C + c];
        ga += double(k.gamma[n * C + c]) * sdzx[n * C + c];
      }
      double inv = 1.0 / double(Cg * HW);
      for (std::int64_t c = g * Cg; c < (g + 1) * Cg; ++c) { mB[n * C + c] = A(gb * inv); mA[n * C + c] = A(ga * inv); }
    }
  }
  parallel_for(s.N * ch.count, threads, [&](std::int64_t t) {
    std::int64_t n = t / ch.count, r0 = (t % ch.count) * ch.rows_per, r1 = std::min(HW, r0 + ch.rows_per);
    auto rows = [&](auto silu) {
      const A *__restrict an = k.a.data() + n * C, *__restrict bn = k.bb.data() + n * C;
      const A *__restrict gn = k.gamma.data() + n * C, *__restrict mn = mc.data() + n * C;
      const A *__restrict rn = rc.data() + n * C, *__restrict mBn = mB.data() + n * C;
      const A *__restrict mAn = mA.data() + n * C;
      for (std::int64_t r = r0; r < r1; ++r) {
        const T *__restrict xr = x + (n * HW + r) * C, *__restrict dyr = dy + (n * HW + r) * C;
        T* __restrict dxr = dx + (n * HW + r) * C;
#pragma omp simd
        for (std::int64_t c = 0; c < C; ++c) {
          A xc = to_acc(xr[c]) - mn[c];
          A d = dz_of<decltype(silu)::value>(to_acc(dyr[c]), xc * an[c] + bn[c]);
          dxr[c] = from_acc<T>(rn[c] * (gn[c] * d - mBn[c] - xc * rn[c] * mAn[c]));
        }
      }
    };
    if (s.silu) rows(std::true_type{}); else rows(std::false_type{});
  });
}

template <class F>
void by_dtype(int dtype, F&& f) {
  switch (dtype) {
    case kFloat32: f(float{}); break;
    case kFloat64: f(double{}); break;
    case kFloat16: f(half_t{}); break;
    case kBFloat16: f(bf16_t{}); break;
    default: throw std::invalid_argument("group_norm: unsupported dtype code");
  }
}

}  // namespace

void group_norm_fwd(const Flat& a, int threads) {
  NormFwdArgs p(a);
  by_dtype(a.dtype, [&](auto t) {
    using T = decltype(t);
    if (p.s.channels_last) fwd_cl<T>(p, threads); else fwd_cf<T>(p, threads);
  });
}

void group_norm_bwd(const Flat& a, int threads) {
  NormBwdArgs p(a);
  by_dtype(a.dtype, [&](auto t) {
    using T = decltype(t);
    if (p.s.channels_last) bwd_cl<T>(p, threads); else bwd_cf<T>(p, threads);
  });
}

}  // namespace GK_ISA
}  // namespace gk
