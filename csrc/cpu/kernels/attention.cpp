// CPU flash attention, forward and backward. Semantics and argument order: csrc/common/attention_args.h.
//
// Forward: K and V of every (batch, head) are packed once per call (threaded): K transposed into
// panels of NW = NR * VL keys, [D][NW] each, V as rows [Lk][Dp] (Dp = D rounded up to a vector), both
// in the accumulation type, plus a per-key bias (0, or -inf for padding / masked keys). Tasks are
// (batch*head, block of MB query rows). A task reads its query rows in place (16-bit ones converted
// to a row-major copy) and walks the keys in tiles of about 256 keys (the K and V tiles stay in L2):
//   1. logits: a register-blocked micro-kernel, MR x NR vector accumulators over all of D, written
//      to a task-local MB x tile buffer (never Lq x Lk);
//   2. online softmax per row: running max m and sum l; the O accumulator is rescaled by
//      exp(m_old - m_new) only from the second tile on. When all keys fit one tile (Lk <= ~256, the
//      cross-attention case with 77 text tokens) this is a single pass with no rescaling at all;
//   3. O += P V: RB rows x up to CB vectors of D in registers over the whole tile.
// A fully masked row gets out = 0 and lse = -inf.
// Backward (FlashAttention-2 style, P recomputed from lse, deterministic): pass 1 over (bh, key block)
// accumulates dK, dV for its keys over all queries; pass 2 over (bh, query block) accumulates dQ.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <type_traits>
#include <vector>

#include "common/attention_args.h"
#include "cpu/parallel.h"
#include "cpu/vec_math.h"

#if defined(__AVX512F__)
#define GK_AT_VBYTES 64
#elif defined(__AVX__)
#define GK_AT_VBYTES 32
#else
#define GK_AT_VBYTES 16
#endif

namespace gk {
namespace GK_ISA {
namespace {

template <class A> struct AVec { typedef A v __attribute__((vector_size(GK_AT_VBYTES))); };

#if GK_AT_VBYTES == 64
constexpr int kMR = 8, kNR = 3;
constexpr int kRB = 8, kCB = 3;         // P.V register block: rows x vectors of D
#else
constexpr int kMR = 6, kNR = 2;
constexpr int kRB = 4, kCB = 3;
#endif
constexpr std::int64_t kTileKeys = 256;  // keys per tile (rounded up to whole panels)
constexpr std::int64_t kFastKeys = 512;  // up to this many keys: a single tile, no rescaling

template <class V, class S>
static inline V splat(S s) {
  V v;
  constexpr int n = int(sizeof(V) / sizeof(v[0]));
  for (int l = 0; l < n; ++l) v[l] = s;
  return v;
}
template <class V, class S>
static inline V loadv(const S* p) { V v; std::memcpy(&v, p, sizeof(V)); return v; }
template <class V, class S>
static inline void storev(S* p, const V& v) { std::memcpy(p, &v, sizeof(V)); }


static inline float exp_a(float x) { return exp_f(x); }
static inline double exp_a(double x) { return std::exp(x); }

// MR query rows (pointers to D contiguous values) x the first NR vectors of one K panel ([D][NW])
// -> scale * logits + bias into S rows (stride ldS). The rows are read in place (broadcasts), not
// packed: a transposing pack of Q cost ~10% of the cross-attention forward.
template <class A, int NR = kNR>
__attribute__((always_inline)) static inline void qk_micro(const A* const* __restrict qrows,
                                                           const A* __restrict panel, const A* __restrict bias,
                                                           std::int64_t D, A scale, A* __restrict S,
                                                           std::int64_t ldS) {
  using V = typename AVec<A>::v;
  constexpr int VL = GK_AT_VBYTES / int(sizeof(A)), NW = kNR * VL;
  V acc[kMR][NR];
  for (int r = 0; r < kMR; ++r)
    for (int j = 0; j < NR; ++j) acc[r][j] = splat<V>(A(0));
  for (std::int64_t d = 0; d < D; ++d) {
    V b[NR];
    for (int j = 0; j < NR; ++j) b[j] = loadv<V>(panel + d * NW + j * VL);
    for (int r = 0; r < kMR; ++r) {
      const A qr = qrows[r][d];
      for (int j = 0; j < NR; ++j) acc[r][j] += qr * b[j];
    }
  }
  const V sv = splat<V>(scale);
  for (int j = 0; j < NR; ++j) {
    const V bj = loadv<V>(bias + j * VL);
    for (int r = 0; r < kMR; ++r) storev(S + r * ldS + j * VL, acc[r][j] * sv + bj);
  }
}

// O[RB rows][CB vectors (+ a half vector when HALF)] += P[rows][0..nk) V[0..nk)[cols]. The half
// vector serves head dims that end mid-vector (40 = 2.5 x 16 floats): a half-width FMA costs half.
template <class A, int CB, bool HALF = false>
__attribute__((always_inline)) static inline void pv_micro(const A* __restrict P, std::int64_t ldP,
                                                           const A* __restrict Vp, std::int64_t ldV,
                                                           std::int64_t nk, A* __restrict O, std::int64_t ldO) {
  using V = typename AVec<A>::v;
  typedef A Vh __attribute__((vector_size(GK_AT_VBYTES / 2)));
  constexpr int VL = GK_AT_VBYTES / int(sizeof(A));
  V acc[kRB][CB > 0 ? CB : 1];
  Vh acch[kRB];
  for (int r = 0; r < kRB; ++r) {
    for (int j = 0; j < CB; ++j) acc[r][j] = loadv<V>(O + r * ldO + j * VL);
    if (HALF) acch[r] = loadv<Vh>(O + r * ldO + CB * VL);
  }
  for (std::int64_t k = 0; k < nk; ++k) {
    V b[CB > 0 ? CB : 1];
    for (int j = 0; j < CB; ++j) b[j] = loadv<V>(Vp + k * ldV + j * VL);
    Vh bh{};
    if (HALF) bh = loadv<Vh>(Vp + k * ldV + CB * VL);
    for (int r = 0; r < kRB; ++r) {
      const A p = P[r * ldP + k];
      for (int j = 0; j < CB; ++j) acc[r][j] += p * b[j];
      if (HALF) acch[r] += p * bh;
    }
  }
  for (int r = 0; r < kRB; ++r) {
    for (int j = 0; j < CB; ++j) storev(O + r * ldO + j * VL, acc[r][j]);
    if (HALF) storev(O + r * ldO + CB * VL, acch[r]);
  }
}

template <class T>
void forward(const AttnArgs& a, int threads) {
  using A = acc_t<T>;
  constexpr int VL = GK_AT_VBYTES / int(sizeof(A)), NW = kNR * VL, MR = kMR;
  const std::int64_t B = a.B, H = a.H, Lq = a.Lq, Lk = a.Lk, D = a.D, BH = B * H;
  if (BH == 0 || Lq == 0) return;
  if (threads < 1) threads = 1;
  const T* q = static_cast<const T*>(a.q);
  const T* k = static_cast<const T*>(a.k);
  const T* v = static_cast<const T*>(a.v);
  T* out = static_cast<T*>(a.out);
  A* lse = static_cast<A*>(a.lse);
  const A NEG = -std::numeric_limits<A>::infinity();

  const std::int64_t npanels = (Lk + NW - 1) / NW, Lkp = npanels * NW;
  const std::int64_t Dp = (D + VL - 1) / VL * VL;                  // V row stride, zero-padded
  const std::int64_t Dh = (D + VL / 2 - 1) / (VL / 2) * (VL / 2);  // columns P.V computes
  const std::int64_t tile_panels = Lkp <= kFastKeys ? npanels : std::max<std::int64_t>(1, kTileKeys / NW);
  const std::int64_t KT = tile_panels * NW;

  // ---- pack K (transposed panels), V (rows) and the key bias
  Buf<A> kpack(std::size_t(BH * Lkp * D));
  Buf<A> vpack(std::size_t(BH * Lkp * Dp));
  Buf<A> bias(std::size_t(B * Lkp));
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t j = 0; j < Lkp; ++j)
      bias.p[b * Lkp + j] = (j >= Lk || (a.mask && a.mask[b * Lk + j])) ? NEG : A(0);
  const double pack_work = double(BH) * double(Lk) * double(D);
  parallel_for(BH, pack_work < 65536.0 ? 1 : threads, [&](std::int64_t bh) {
    const std::int64_t b = bh / H, h = bh % H;
    const T* kb = k + b * a.ks[0] + h * a.ks[1];
    const T* vb = v + b * a.vs[0] + h * a.vs[1];
    A* kp = kpack.p + bh * Lkp * D;
    A* vp = vpack.p + bh * Lkp * Dp;
    for (std::int64_t pi = 0; pi < npanels; ++pi) {
      A* dst = kp + pi * D * NW;
      for (int c = 0; c < NW; ++c) {
        const std::int64_t j = pi * NW + c;
        if (j < Lk) {
          const T* row = kb + j * a.ks[2];
          for (std::int64_t d = 0; d < D; ++d) dst[d * NW + c] = to_acc(row[d]);
        } else {
          for (std::int64_t d = 0; d < D; ++d) dst[d * NW + c] = A(0);
        }
      }
    }
    for (std::int64_t j = 0; j < Lkp; ++j) {
      A* dst = vp + j * Dp;
      if (j < Lk) {
        const T* row = vb + j * a.vs[2];
        for (std::int64_t d = 0; d < D; ++d) dst[d] = to_acc(row[d]);
        for (std::int64_t d = D; d < Dp; ++d) dst[d] = A(0);
      } else {
        for (std::int64_t d = 0; d < Dp; ++d) dst[d] = A(0);
      }
    }
  });

  // ---- tasks: (bh, block of MB query rows)
  std::int64_t MB = 64;
  if (Lq < MB) MB = (Lq + MR - 1) / MR * MR;
  const std::int64_t nblocks = (Lq + MB - 1) / MB;
  const double work = double(BH) * double(Lq) * double(Lkp) * double(D);
  const A scale = A(a.scale);
  parallel_for(BH * nblocks, work < double(1 << 18) ? 1 : threads, [&](std::int64_t t) {
    const std::int64_t bh = t / nblocks, blk = t % nblocks;
    const std::int64_t b = bh / H, h = bh % H;
    const std::int64_t m0 = blk * MB, rows = std::min(MB, Lq - m0);
    const std::int64_t groups = (rows + MR - 1) / MR, R = groups * MR, Rp = (R + kRB - 1) / kRB * kRB;
    const T* qb = q + b * a.qs[0] + h * a.qs[1];
    const A* kp = kpack.p + bh * Lkp * D;
    const A* vp = vpack.p + bh * Lkp * Dp;
    const A* bi = bias.p + b * Lkp;
    Buf<A> S(std::size_t(Rp * KT)), O(std::size_t(Rp * Dp));
    if (Rp > R) std::memset(S.p + R * KT, 0, sizeof(A) * std::size_t((Rp - R) * KT));
    std::vector<A> m(std::size_t(R), NEG), l(std::size_t(R), A(0));
    // Query rows as the micro-kernel reads them: in place when stored in the accumulation type,
    // else converted into a row-major copy; rows past the end read zeros.
    constexpr bool in_place = std::is_same<T, A>::value;
    Buf<A> qconv(in_place ? std::size_t(D) : std::size_t((rows + 1) * D));
    A* zero_row = qconv.p + (in_place ? 0 : rows * D);
    std::memset(zero_row, 0, sizeof(A) * std::size_t(D));
    std::vector<const A*> qrow(std::size_t(R), zero_row);
    for (std::int64_t r = 0; r < rows; ++r) {
      const T* row = qb + (m0 + r) * a.qs[2];
      if constexpr (in_place) {
        qrow[r] = row;
      } else {
        A* dst = qconv.p + r * D;
        for (std::int64_t d = 0; d < D; ++d) dst[d] = to_acc(row[d]);
        qrow[r] = dst;
      }
    }
    std::memset(O.p, 0, sizeof(A) * std::size_t(Rp * Dp));
    for (std::int64_t pt = 0; pt < npanels; pt += tile_panels) {
      const std::int64_t pe = std::min(npanels, pt + tile_panels);
      const std::int64_t j0 = pt * NW;
      // keys computed in this tile: whole vectors up to the last real key
      const std::int64_t nk = std::min((pe - pt) * NW, (Lk - j0 + VL - 1) / VL * VL);
      const int tail_vecs = int((nk - (pe - 1 - pt) * NW) / VL);  // vectors of the last panel
      // 1. logits
      for (std::int64_t g = 0; g < groups; ++g) {
        const A* const* qg = qrow.data() + g * MR;
        A* Sg = S.p + g * MR * KT;
        for (std::int64_t pi = pt; pi < pe - 1; ++pi)
          qk_micro<A>(qg, kp + pi * D * NW, bi + pi * NW, D, scale, Sg + (pi - pt) * NW, KT);
        const std::int64_t pl = pe - 1;
        const A* kl = kp + pl * D * NW;
        A* sl = Sg + (pl - pt) * NW;
        if (tail_vecs >= kNR) qk_micro<A>(qg, kl, bi + pl * NW, D, scale, sl, KT);
        else if (tail_vecs == 2) qk_micro<A, 2>(qg, kl, bi + pl * NW, D, scale, sl, KT);
        else qk_micro<A, 1>(qg, kl, bi + pl * NW, D, scale, sl, KT);
      }
      // 2. online softmax
      const bool first = pt == 0;
      for (std::int64_t r = 0; r < R; ++r) {
        A* s = S.p + r * KT;
        // row max over the tile (nk is a whole number of vectors); explicit vectors: the
        // compiler keeps a scalar max reduction serial
        using V = typename AVec<A>::v;
        V mv = splat<V>(NEG);
        for (std::int64_t j = 0; j < nk; j += VL) {
          const V x = loadv<V>(s + j);
          mv = x > mv ? x : mv;
        }
        A mx = NEG;
        for (int l = 0; l < VL; ++l) mx = mv[l] > mx ? mv[l] : mx;
        const A mnew = std::max(m[r], mx);
        const A muse = mnew == NEG ? A(0) : mnew;
        A sum = 0;
#pragma omp simd reduction(+ : sum)
        for (std::int64_t j = 0; j < nk; ++j) {
          const A p = exp_a(s[j] - muse);
          s[j] = p;
          sum += p;
        }
        if (first) {
          l[r] = sum;
        } else {
          const A alpha = exp_a(m[r] - muse);
          l[r] = l[r] * alpha + sum;
          A* o = O.p + r * Dp;
          if (alpha != A(1))
            for (std::int64_t d = 0; d < Dp; ++d) o[d] *= alpha;
        }
        m[r] = mnew;
      }
      // 3. O += P V over the real keys only (P of the padding is 0)
      const A* vt = vp + j0 * Dp;
      const std::int64_t nkv = std::min(nk, Lk - j0);
      for (std::int64_t r = 0; r < Rp; r += kRB) {
        for (std::int64_t c = 0; c < Dh; c += kCB * VL) {
          // half vectors left in this column block (kCB * 2 at most)
          const std::int64_t nh = std::min<std::int64_t>(2 * kCB, (Dh - c) / (VL / 2));
          const A* P = S.p + r * KT;
          A* o = O.p + r * Dp + c;
          switch (nh) {
            case 6: pv_micro<A, 3>(P, KT, vt + c, Dp, nkv, o, Dp); break;
            case 5: pv_micro<A, 2, true>(P, KT, vt + c, Dp, nkv, o, Dp); break;
            case 4: pv_micro<A, 2>(P, KT, vt + c, Dp, nkv, o, Dp); break;
            case 3: pv_micro<A, 1, true>(P, KT, vt + c, Dp, nkv, o, Dp); break;
            case 2: pv_micro<A, 1>(P, KT, vt + c, Dp, nkv, o, Dp); break;
            default: pv_micro<A, 0, true>(P, KT, vt + c, Dp, nkv, o, Dp); break;
          }
        }
      }
    }
    // ---- normalise and store
    T* ob = out + b * a.os[0] + h * a.os[1];
    A* lb = lse + bh * Lq;
    for (std::int64_t r = 0; r < rows; ++r) {
      const A inv = l[r] > A(0) ? A(1) / l[r] : A(0);
      const A* o = O.p + r * Dp;
      T* dst = ob + (m0 + r) * a.os[2];
      for (std::int64_t d = 0; d < D; ++d) dst[d] = from_acc<T>(A(o[d] * inv));
      lb[m0 + r] = l[r] > A(0) ? m[r] + std::log(l[r]) : NEG;
    }
  });
}

// ------------------------------------------------------------------------------------------ backward
template <class T>
void backward(const AttnArgs& a, int threads) {
  using A = acc_t<T>;
  const std::int64_t B = a.B, H = a.H, Lq = a.Lq, Lk = a.Lk, D = a.D, BH = B * H;
  if (BH == 0) return;
  if (threads < 1) threads = 1;
  const T* q = static_cast<const T*>(a.q);
  const T* k = static_cast<const T*>(a.k);
  const T* v = static_cast<const T*>(a.v);
  const T* out = static_cast<const T*>(a.out);
  const T* dout = static_cast<const T*>(a.dout);
  const A* lse = static_cast<const A*>(a.lse);
  T* dq = static_cast<T*>(a.dq);
  T* dk = static_cast<T*>(a.dk);
  T* dv = static_cast<T*>(a.dv);
  const A NEG = -std::numeric_limits<A>::infinity();
  const A scale = A(a.scale);
  const double work = double(BH) * double(Lq) * double(Lk) * double(D);
  const int thr = work < double(1 << 16) ? 1 : threads;

  // converted copies: Q, dO rows [Lq][D]; K, V transposed [D][Lk]; K rows [Lk][D]; delta [Lq]
  Buf<A> Qc(std::size_t(BH * Lq * D)), dOc(std::size_t(BH * Lq * D)), delta(std::size_t(BH * Lq));
  Buf<A> Kt(std::size_t(BH * D * Lk)), Vt(std::size_t(BH * D * Lk)), Kr(std::size_t(BH * Lk * D));
  Buf<A> bias(std::size_t(B * Lk));
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t j = 0; j < Lk; ++j) bias.p[b * Lk + j] = (a.mask && a.mask[b * Lk + j]) ? NEG : A(0);
  parallel_for(BH, thr, [&](std::int64_t bh) {
    const std::int64_t b = bh / H, h = bh % H;
    for (std::int64_t i = 0; i < Lq; ++i) {
      const T* qr = q + b * a.qs[0] + h * a.qs[1] + i * a.qs[2];
      const T* orow = out + b * a.os[0] + h * a.os[1] + i * a.os[2];
      const T* gr = dout + b * a.os[0] + h * a.os[1] + i * a.os[2];
      A* qd = Qc.p + (bh * Lq + i) * D;
      A* gd = dOc.p + (bh * Lq + i) * D;
      A s = 0;
      for (std::int64_t d = 0; d < D; ++d) {
        qd[d] = to_acc(qr[d]);
        gd[d] = to_acc(gr[d]);
        s += gd[d] * A(to_acc(orow[d]));
      }
      delta.p[bh * Lq + i] = s;
    }
    for (std::int64_t j = 0; j < Lk; ++j) {
      const T* kr = k + b * a.ks[0] + h * a.ks[1] + j * a.ks[2];
      const T* vr = v + b * a.vs[0] + h * a.vs[1] + j * a.vs[2];
      for (std::int64_t d = 0; d < D; ++d) {
        const A kv = to_acc(kr[d]);
        Kr.p[(bh * Lk + j) * D + d] = kv;
        Kt.p[(bh * D + d) * Lk + j] = kv;
        Vt.p[(bh * D + d) * Lk + j] = to_acc(vr[d]);
      }
    }
  });

  // s, p, dp, ds for one query row i against keys [j0, j0+n) of head bh (ds returned in `ds`, p in `p`)
  auto row_probs = [&](std::int64_t bh, std::int64_t i, std::int64_t j0, std::int64_t n, A* p, A* ds) {
    const std::int64_t b = bh / H;
    const A* qi = Qc.p + (bh * Lq + i) * D;
    const A* gi = dOc.p + (bh * Lq + i) * D;
    const A* kt = Kt.p + bh * D * Lk + j0;
    const A* vt = Vt.p + bh * D * Lk + j0;
    const A* bi = bias.p + b * Lk + j0;
    const A L = lse[bh * Lq + i], dl = delta.p[bh * Lq + i];
    for (std::int64_t j = 0; j < n; ++j) { p[j] = 0; ds[j] = 0; }
    for (std::int64_t d = 0; d < D; ++d) {
      const A qd = qi[d], gd = gi[d];
      const A* kr = kt + d * Lk;
      const A* vr = vt + d * Lk;
#pragma omp simd
      for (std::int64_t j = 0; j < n; ++j) { p[j] += qd * kr[j]; ds[j] += gd * vr[j]; }
    }
    const A Lu = L == NEG ? A(0) : L;
#pragma omp simd
    for (std::int64_t j = 0; j < n; ++j) {
      const A pj = L == NEG ? A(0) : exp_a(p[j] * scale + bi[j] - Lu);
      p[j] = pj;
      ds[j] = pj * (ds[j] - dl);
    }
  };

  // ---- pass 1: dK, dV per (bh, key block)
  constexpr std::int64_t KB = 64;
  const std::int64_t nkb = (Lk + KB - 1) / KB;
  parallel_for(BH * nkb, thr, [&](std::int64_t t) {
    const std::int64_t bh = t / nkb, kb = t % nkb;
    const std::int64_t b = bh / H, h = bh % H;
    const std::int64_t j0 = kb * KB, n = std::min(KB, Lk - j0);
    std::vector<A> dK(std::size_t(n * D), A(0)), dV(std::size_t(n * D), A(0)), p(static_cast<std::size_t>(n)), ds(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < Lq; ++i) {
      row_probs(bh, i, j0, n, p.data(), ds.data());
      const A* qi = Qc.p + (bh * Lq + i) * D;
      const A* gi = dOc.p + (bh * Lq + i) * D;
      for (std::int64_t j = 0; j < n; ++j) {
        const A pj = p[j], sj = ds[j] * scale;
        A* dvj = dV.data() + j * D;
        A* dkj = dK.data() + j * D;
#pragma omp simd
        for (std::int64_t d = 0; d < D; ++d) { dvj[d] += pj * gi[d]; dkj[d] += sj * qi[d]; }
      }
    }
    for (std::int64_t j = 0; j < n; ++j) {
      T* dkr = dk + b * a.ks[0] + h * a.ks[1] + (j0 + j) * a.ks[2];
      T* dvr = dv + b * a.vs[0] + h * a.vs[1] + (j0 + j) * a.vs[2];
      for (std::int64_t d = 0; d < D; ++d) {
        dkr[d] = from_acc<T>(dK[std::size_t(j * D + d)]);
        dvr[d] = from_acc<T>(dV[std::size_t(j * D + d)]);
      }
    }
  });

  // ---- pass 2: dQ per (bh, query block)
  constexpr std::int64_t QB = 32, KC = 256;
  const std::int64_t nqb = (Lq + QB - 1) / QB;
  parallel_for(BH * nqb, thr, [&](std::int64_t t) {
    const std::int64_t bh = t / nqb, qb = t % nqb;
    const std::int64_t b = bh / H, h = bh % H;
    const std::int64_t i0 = qb * QB, i1 = std::min(Lq, i0 + QB);
    std::vector<A> acc(static_cast<std::size_t>(D)), p(static_cast<std::size_t>(KC)), ds(static_cast<std::size_t>(KC));
    for (std::int64_t i = i0; i < i1; ++i) {
      std::fill(acc.begin(), acc.end(), A(0));
      for (std::int64_t j0 = 0; j0 < Lk; j0 += KC) {
        const std::int64_t n = std::min(KC, Lk - j0);
        row_probs(bh, i, j0, n, p.data(), ds.data());
        const A* kr = Kr.p + (bh * Lk + j0) * D;
        for (std::int64_t j = 0; j < n; ++j) {
          const A sj = ds[j];
#pragma omp simd
          for (std::int64_t d = 0; d < D; ++d) acc[d] += sj * kr[j * D + d];
        }
      }
      T* dqr = dq + b * a.qs[0] + h * a.qs[1] + i * a.qs[2];
      for (std::int64_t d = 0; d < D; ++d) dqr[d] = from_acc<T>(A(acc[d] * scale));
    }
  });
}

}  // namespace

void attention_fwd(const Flat& f, int threads) {
  AttnArgs p(f, false);
  by_dtype(f.dtype, "attention_fwd", [&](auto t) { forward<decltype(t)>(p, threads); });
}

void attention_bwd(const Flat& f, int threads) {
  AttnArgs p(f, true);
  by_dtype(f.dtype, "attention_bwd", [&](auto t) { backward<decltype(t)>(p, threads); });
}

}  // namespace GK_ISA
}  // namespace gk
