// CPU flash attention, forward and backward. Semantics and argument order: csrc/common/attention_args.h.
//
// Forward: K and V of every (batch, head) are packed once per call (threaded): K transposed into
// panels of NW = NR * VL keys, [D][NW] each, V as rows [Lk][Dp] (Dp = D rounded up to a vector), both
// in the accumulation type, plus a per-key bias (0, or -inf for padding / masked keys). V is read in
// place instead where its rows already serve (float/double data, no mask, D whole half vectors). Tasks are
// (batch*head, block of MB query rows). A task reads its query rows in place (16-bit ones converted
// to a row-major copy) and walks the keys in tiles of about 256 keys (the K and V tiles stay in L2):
//   1. logits: a register-blocked micro-kernel, MR x NR vector accumulators over all of D, written
//      to a task-local MB x tile buffer (never Lq x Lk);
//   2. online softmax per row: running max m and sum l; the O accumulator is rescaled by
//      exp(m_old - m_new) only from the second tile on. When all keys fit one tile (Lk <= ~256, the
//      cross-attention case with 77 text tokens) this is a single pass with no rescaling at all;
//   3. O += P V: RB rows x up to CB vectors of D in registers over the whole tile.
// A fully masked row gets out = 0 and lse = -inf. Causal: a task stops at the tile holding its last
// row's last visible key (the tiles past it are never computed); within that tile, keys past each
// row are set to -inf before the softmax.
// Backward (FlashAttention-2 style, P recomputed from lse, deterministic): one pass over (bh, chunk of
// query blocks) on the same tiles and micro-kernels; see backward().
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

// e^x for the softmax's x = s - rowmax <= 0 (and NaN, kept): exp_f without its overflow branch; 0 below
// -87, where 2^n would leave the normal range.
static inline float exp_nonpos(float x) {
  const float log2e = 1.44269504088896341f, ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
  const float magic = 12582912.0f;  // 1.5 * 2^23, as exp_f
  const float xc = x < -87.0f ? -87.0f : x;
  const float t = xc * log2e + magic, n = t - magic;
  const float r = xc - n * ln2_hi - n * ln2_lo;
  const float e = exp_reduced(r) * bits_to_float((float_to_bits(t) - 0x4B400000u + 127u) << 23);  // 2^n, n >= -126
  return x < -87.0f ? 0.0f : e;
}
static inline double exp_nonpos(double x) { return std::exp(x); }

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

// ------------------------------------------------------------------------------------------ packing
// Keys (or values) of one head as qk_micro reads them: panels of NW rows, [D][NW] each, zero past L
// and for masked keys (mask: that batch's [L] row or null), whose values are never read: a NaN or inf
// in a padding key cannot reach the output (0 * NaN would).
template <class T, class A, int NW>
void pack_panels(const T* src, std::int64_t stride, std::int64_t L, std::int64_t D, std::int64_t npanels,
                 const std::uint8_t* mask, A* __restrict dst) {
  Buf<T> zeros(static_cast<std::size_t>(D));
  std::memset(zeros.p, 0, sizeof(T) * std::size_t(D));  // (the bits of 0 in every element type)
  const T* rows[NW];
  for (std::int64_t pi = 0; pi < npanels; ++pi, dst += D * NW) {
    for (int c = 0; c < NW; ++c) {
      const std::int64_t j = pi * NW + c;
      rows[c] = j < L && !(mask && mask[j]) ? src + j * stride : zeros.p;
    }
    // one destination row (NW contiguous values) at a time: whole-vector stores
    for (std::int64_t d = 0; d < D; ++d)
      for (int c = 0; c < NW; ++c) dst[d * NW + c] = to_acc(rows[c][d]);
  }
}

// Rows [0, n) of D values as rows of Dp (a whole number of vectors), zero past D, past row L and for
// masked rows (as pack_panels).
template <class T, class A>
void pack_rows(const T* src, std::int64_t stride, std::int64_t L, std::int64_t n, std::int64_t D,
               std::int64_t Dp, const std::uint8_t* mask, A* __restrict dst) {
  for (std::int64_t j = 0; j < n; ++j, dst += Dp) {
    std::int64_t d = 0;
    if (j < L && !(mask && mask[j])) {
      const T* row = src + j * stride;
      for (; d < D; ++d) dst[d] = to_acc(row[d]);
    }
    for (; d < Dp; ++d) dst[d] = A(0);
  }
}

// Additive key bias of every batch: 0, or -inf for a padding key (mask) and past Lk (up to Lkp).
template <class A>
void key_bias(const AttnArgs& a, std::int64_t Lkp, A* __restrict bias) {
  const A NEG = -std::numeric_limits<A>::infinity();
  for (std::int64_t b = 0; b < a.B; ++b)
    for (std::int64_t j = 0; j < Lkp; ++j)
      bias[b * Lkp + j] = (j >= a.Lk || (a.mask && a.mask[b * a.Lk + j])) ? NEG : A(0);
}

// The first key of batch b that is not padding (Lk when every key is).
inline std::int64_t first_live_key(const AttnArgs& a, std::int64_t b) {
  std::int64_t j = 0;
  if (a.mask)
    while (j < a.Lk && a.mask[b * a.Lk + j]) ++j;
  return j;
}

// The head geometry both passes share: keys in panels of NW, tiles of KT keys (all keys in one tile
// up to kFastKeys), D padded to whole vectors (Dp, the row stride) and half vectors (Dh, what the
// P.V micro-kernel computes).
template <class A>
struct Geometry {
  static constexpr int VL = GK_AT_VBYTES / int(sizeof(A)), NW = kNR * VL;
  std::int64_t npanels, Lkp, Dp, Dh, tile_panels, KT;
  Geometry(std::int64_t Lk, std::int64_t D) {
    npanels = (Lk + NW - 1) / NW;
    Lkp = npanels * NW;
    Dp = (D + VL - 1) / VL * VL;
    Dh = (D + VL / 2 - 1) / (VL / 2) * (VL / 2);
    tile_panels = Lkp <= kFastKeys ? npanels : std::max<std::int64_t>(1, kTileKeys / NW);
    KT = tile_panels * NW;
  }
  // keys computed in the tile of panels [pt, pe): whole vectors up to the last real key
  std::int64_t tile_keys(std::int64_t pt, std::int64_t pe, std::int64_t Lk) const {
    return std::min((pe - pt) * NW, (Lk - pt * NW + VL - 1) / VL * VL);
  }
};

// S[R rows][tile] = scale * rows . panels + bias over the panels [pt, pe) (nk keys), MR rows at a time.
template <class A>
void qk_tile(const A* const* rows, std::int64_t R, const A* panels, const A* bias, std::int64_t D, A scale,
             std::int64_t pt, std::int64_t pe, std::int64_t nk, A* S, std::int64_t ldS) {
  constexpr int VL = GK_AT_VBYTES / int(sizeof(A)), NW = kNR * VL;
  const int tail_vecs = int((nk - (pe - 1 - pt) * NW) / VL);  // vectors of the last panel
  for (std::int64_t g = 0; g < R / kMR; ++g) {
    const A* const* qg = rows + g * kMR;
    A* Sg = S + g * kMR * ldS;
    for (std::int64_t pi = pt; pi < pe - 1; ++pi)
      qk_micro<A>(qg, panels + pi * D * NW, bias + pi * NW, D, scale, Sg + (pi - pt) * NW, ldS);
    const std::int64_t pl = pe - 1;
    const A* kl = panels + pl * D * NW;
    A* sl = Sg + (pl - pt) * NW;
    if (tail_vecs >= kNR) qk_micro<A>(qg, kl, bias + pl * NW, D, scale, sl, ldS);
    else if (tail_vecs == 2) qk_micro<A, 2>(qg, kl, bias + pl * NW, D, scale, sl, ldS);
    else qk_micro<A, 1>(qg, kl, bias + pl * NW, D, scale, sl, ldS);
  }
}

// O[Rp rows][Dh columns] (stride ldO) += P[Rp][0..nk) (stride ldP) . Vr[0..nk)[columns] (stride ldV),
// kRB rows at a time.
template <class A>
void pv_tile(const A* P, std::int64_t ldP, std::int64_t Rp, const A* Vr, std::int64_t ldV, std::int64_t nk,
             std::int64_t Dh, A* O, std::int64_t ldO) {
  constexpr int VL = GK_AT_VBYTES / int(sizeof(A));
  for (std::int64_t r = 0; r < Rp; r += kRB) {
    for (std::int64_t c = 0; c < Dh; c += kCB * VL) {
      const std::int64_t nh = std::min<std::int64_t>(2 * kCB, (Dh - c) / (VL / 2));  // half vectors left
      const A* Pr = P + r * ldP;
      A* o = O + r * ldO + c;
      switch (nh) {
        case 6: pv_micro<A, 3>(Pr, ldP, Vr + c, ldV, nk, o, ldO); break;
        case 5: pv_micro<A, 2, true>(Pr, ldP, Vr + c, ldV, nk, o, ldO); break;
        case 4: pv_micro<A, 2>(Pr, ldP, Vr + c, ldV, nk, o, ldO); break;
        case 3: pv_micro<A, 1, true>(Pr, ldP, Vr + c, ldV, nk, o, ldO); break;
        case 2: pv_micro<A, 1>(Pr, ldP, Vr + c, ldV, nk, o, ldO); break;
        default: pv_micro<A, 0, true>(Pr, ldP, Vr + c, ldV, nk, o, ldO); break;
      }
    }
  }
}

// pv_tile where row r of O sums only the k of its band [lo0 + r, hi0 + r) (clamped to [0, nk); lo, hi
// non-decreasing in r): a query row's keys up to its causal diagonal, or a key row's queries from it on.
// A pair outside the band has P = 0, but 0 * NaN is NaN (a hidden key's v, a hidden query): when the
// rows of Vr that some band leaves out hold a NaN or inf, those rows are summed row by row over each
// band only; otherwise (always, for finite data) this is pv_tile.
template <class A>
void pv_tile_band(const A* P, std::int64_t ldP, std::int64_t Rp, const A* Vr, std::int64_t ldV, std::int64_t nk,
                  std::int64_t Dh, A* O, std::int64_t ldO, std::int64_t lo0, std::int64_t hi0) {
  const auto at = [nk](std::int64_t i) { return std::min(std::max<std::int64_t>(i, 0), nk); };
  const std::int64_t c0 = at(lo0 + Rp - 1), c1 = std::max(c0, at(hi0));  // [c0, c1): in every band
  A bad = 0;  // sum of x - x over the rows outside [c0, c1): 0 when all are finite, else NaN
  for (std::int64_t k = 0; k < nk; ++k) {
    if (k == c0) k = c1;
    if (k >= nk) break;
    const A* v = Vr + k * ldV;
#pragma omp simd reduction(+ : bad)
    for (std::int64_t c = 0; c < Dh; ++c) bad += v[c] - v[c];
  }
  if (bad == A(0)) {
    pv_tile(P, ldP, Rp, Vr, ldV, nk, Dh, O, ldO);
    return;
  }
  pv_tile(P + c0, ldP, Rp, Vr + c0 * ldV, ldV, c1 - c0, Dh, O, ldO);
  for (std::int64_t r = 0; r < Rp; ++r) {
    const std::int64_t lo = at(lo0 + r), hi = at(hi0 + r);
    A* o = O + r * ldO;
    for (std::int64_t k = lo; k < hi; ++k) {
      if (k >= c0 && k < c1) continue;  // summed by pv_tile
      const A p = P[r * ldP + k];
      const A* v = Vr + k * ldV;
#pragma omp simd
      for (std::int64_t c = 0; c < Dh; ++c) o[c] += p * v[c];
    }
  }
}

constexpr std::int64_t kUnbounded = std::int64_t(1) << 60;  // a band edge past every index

// ------------------------------------------------------------------------------------------ forward
template <class T>
void forward(const AttnArgs& a, int threads) {
  using A = acc_t<T>;
  using V = typename AVec<A>::v;
  constexpr int VL = Geometry<A>::VL, MR = kMR;
  const std::int64_t B = a.B, H = a.H, Lq = a.Lq, Lk = a.Lk, D = a.D, BH = B * H;
  if (BH == 0 || Lq == 0) return;
  if (threads < 1) threads = 1;
  const T* q = static_cast<const T*>(a.q);
  const T* k = static_cast<const T*>(a.k);
  const T* v = static_cast<const T*>(a.v);
  T* out = static_cast<T*>(a.out);
  A* lse = static_cast<A*>(a.lse);
  const A NEG = -std::numeric_limits<A>::infinity();
  const Geometry<A> geo(Lk, D);
  const std::int64_t npanels = geo.npanels, Lkp = geo.Lkp, Dp = geo.Dp, KT = geo.KT;

  // ---- pack K (panels), V (rows) and the key bias. V is read in place where its rows already are what
  // the P.V micro-kernel reads: the accumulation type, no padding key to zero, and the Dh columns it
  // computes within the row.
  const A* v_in_place = nullptr;
  if constexpr (std::is_same<T, A>::value)
    if (!a.mask && geo.Dh <= D) v_in_place = v;
  Buf<A> kpack(std::size_t(BH * Lkp * D)), vpack(v_in_place ? 0 : std::size_t(BH * Lkp * Dp)),
      bias(std::size_t(B * Lkp));
  key_bias(a, Lkp, bias.p);
  const double pack_work = double(BH) * double(Lk) * double(D);
  parallel_for(BH, pack_work < 65536.0 ? 1 : threads, [&](std::int64_t bh) {
    const std::int64_t b = bh / H, h = bh % H;
    const std::uint8_t* mb = a.mask ? a.mask + b * Lk : nullptr;
    pack_panels<T, A, Geometry<A>::NW>(k + b * a.ks[0] + h * a.ks[1], a.ks[2], Lk, D, npanels, mb,
                                       kpack.p + bh * Lkp * D);
    if (!v_in_place)
      pack_rows(v + b * a.vs[0] + h * a.vs[1], a.vs[2], Lk, Lkp, D, Dp, mb, vpack.p + bh * Lkp * Dp);
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
    // rows computed: R by the logits' micro-kernel, Rv by P.V's (whose rows past `rows` are never stored)
    const std::int64_t R = (rows + MR - 1) / MR * MR, Rp = (R + kRB - 1) / kRB * kRB;
    const std::int64_t Rv = (rows + kRB - 1) / kRB * kRB;
    const T* qb = q + b * a.qs[0] + h * a.qs[1];
    const A* kp = kpack.p + bh * Lkp * D;
    const A* vp = v_in_place ? v_in_place + b * a.vs[0] + h * a.vs[1] : vpack.p + bh * Lkp * Dp;
    const std::int64_t ldV = v_in_place ? a.vs[2] : Dp;
    const A* bi = bias.p + b * Lkp;
    Buf<A> S(std::size_t(Rp * KT)), O(std::size_t(Rp * Dp));
    if (Rp > R) std::memset(S.p + R * KT, 0, sizeof(A) * std::size_t((Rp - R) * KT));
    std::vector<A> m(std::size_t(R), NEG), l(std::size_t(R), A(0));
    // Query rows as the micro-kernel reads them: in place when stored in the accumulation type,
    // else converted into a row-major copy; rows past the end read zeros.
    constexpr bool in_place = std::is_same<T, A>::value;
    Buf<A> qconv(in_place ? std::size_t(D) : std::size_t((rows + 1) * D));
    A* zero_row = qconv.p + (in_place ? 0 : rows * D);
    std::fill_n(zero_row, D, A(0));
    std::vector<const A*> qrow(std::size_t(R), zero_row);
    // a row that sees no key reads zeros: its logits are then exactly -inf whatever q holds (NaN + -inf
    // would be NaN), so it gives zeros like every fully masked row
    const std::int64_t first_live = first_live_key(a, b);
    for (std::int64_t r = 0; r < rows; ++r) {
      const T* row = qb + (m0 + r) * a.qs[2];
      if (first_live >= (a.causal ? std::min(Lk, m0 + r + 1) : Lk)) continue;  // (qrow[r] = zero_row)
      if constexpr (in_place) {
        qrow[r] = row;
      } else {
        A* dst = qconv.p + r * D;
        for (std::int64_t d = 0; d < D; ++d) dst[d] = to_acc(row[d]);
        qrow[r] = dst;
      }
    }
    std::memset(O.p, 0, sizeof(A) * std::size_t(Rp * Dp));
    const std::int64_t Lv = a.causal ? std::min(Lk, m0 + rows) : Lk;  // keys any row of the block sees
    const std::int64_t nvis = (Lv + Geometry<A>::NW - 1) / Geometry<A>::NW;
    for (std::int64_t pt = 0; pt < nvis; pt += geo.tile_panels) {
      const std::int64_t pe = std::min(nvis, pt + geo.tile_panels);
      const std::int64_t j0 = pt * Geometry<A>::NW, nk = geo.tile_keys(pt, pe, Lv);
      // 1. logits
      qk_tile(qrow.data(), R, kp, bi, D, scale, pt, pe, nk, S.p, KT);
      // 2. online softmax
      const bool first = pt == 0;
      for (std::int64_t r = 0; r < rows; ++r) {
        A* s = S.p + r * KT;
        if (a.causal)  // keys past row m0 + r (the first tile always keeps key 0)
          for (std::int64_t j = std::max<std::int64_t>(0, m0 + r + 1 - j0); j < nk; ++j) s[j] = NEG;
        // row max over the tile (nk is a whole number of vectors); explicit vectors: the
        // compiler keeps a scalar max reduction serial
        V mv = splat<V>(NEG);
        for (std::int64_t j = 0; j < nk; j += VL) {
          const V x = loadv<V>(s + j);
          mv = x > mv ? x : mv;
        }
        A mx = NEG;
        for (int u = 0; u < VL; ++u) mx = mv[u] > mx ? mv[u] : mx;
        const A mnew = std::max(m[r], mx);
        const A muse = mnew == NEG ? A(0) : mnew;
        A sum = 0;
#pragma omp simd reduction(+ : sum)
        for (std::int64_t j = 0; j < nk; ++j) {
          const A p = exp_nonpos(s[j] - muse);
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
      if (a.causal)  // row r: keys up to m0 + r
        pv_tile_band(S.p, KT, Rv, vp + j0 * ldV, ldV, std::min(nk, Lv - j0), geo.Dh, O.p, Dp, -kUnbounded, m0 + 1 - j0);
      else
        pv_tile(S.p, KT, Rv, vp + j0 * ldV, ldV, std::min(nk, Lv - j0), geo.Dh, O.p, Dp);
    }
    // ---- normalise and store
    T* ob = out + b * a.os[0] + h * a.os[1];
    A* lb = lse + bh * Lq;
    for (std::int64_t r = 0; r < rows; ++r) {
      const A inv = l[r] > A(0) ? A(1) / l[r] : A(0);
      const A* o = O.p + r * Dp;
      T* dst = ob + (m0 + r) * a.os[2];
      for (std::int64_t d = 0; d < D; ++d) dst[d] = from_acc<T>(A(o[d] * inv));
      // -inf for a fully masked row (l = 0); a NaN row keeps NaN (the reference's logsumexp)
      lb[m0 + r] = l[r] > A(0) ? m[r] + std::log(l[r]) : (l[r] == A(0) ? NEG : l[r]);
    }
  });
}

// ------------------------------------------------------------------------------------------ backward
// Tiles as in the forward, P recomputed from the saved lse. A task owns (bh, a chunk of query rows)
// and walks it in blocks of MB rows; per block and key tile (T^ = transposed, tile-local):
//   S = scale Q K^T + bias, P = exp(S - lse), dP = dO V^T, dS = P (dP - delta), delta = rowsum(dO O)
//   dQ += dS K,  dV += P^T dO,  dK += dS^T Q   (then dQ, dK times scale)
// all through the forward's micro-kernels (five Lq x Lk x D products, the minimum). dK, dV are
// accumulated per task: with one chunk per head (enough tasks) straight into the result, else into
// per-chunk partials summed in a fixed order afterwards (deterministic). Causal: a query block walks
// only the key tiles up to its last row; P and dS past each row's diagonal are zero.
template <class T>
void backward(const AttnArgs& a, int threads) {
  using A = acc_t<T>;
  constexpr int NW = Geometry<A>::NW, MR = kMR;
  const std::int64_t B = a.B, H = a.H, Lq = a.Lq, Lk = a.Lk, D = a.D, BH = B * H;
  if (BH == 0) return;
  if (threads < 1) threads = 1;
  const T *q = static_cast<const T*>(a.q), *k = static_cast<const T*>(a.k), *v = static_cast<const T*>(a.v);
  const T *out = static_cast<const T*>(a.out), *dout = static_cast<const T*>(a.dout);
  const A* lse = static_cast<const A*>(a.lse);
  T *dq = static_cast<T*>(a.dq), *dk = static_cast<T*>(a.dk), *dv = static_cast<T*>(a.dv);
  const A NEG = -std::numeric_limits<A>::infinity();
  const A scale = A(a.scale);
  const Geometry<A> geo(Lk, D);
  const std::int64_t npanels = geo.npanels, Lkp = geo.Lkp, Dp = geo.Dp, Dh = geo.Dh, KT = geo.KT;
  const double work = double(BH) * double(std::max<std::int64_t>(Lq, 1)) * double(Lkp) * double(D);
  const int thr = work < double(1 << 16) ? 1 : threads;

  // ---- pack K and V (panels, for S and dP), K rows (for dQ), the key bias and a zero bias (dP)
  Buf<A> kpan(std::size_t(BH * Lkp * D)), vpan(std::size_t(BH * Lkp * D)), krow(std::size_t(BH * Lkp * Dp));
  Buf<A> bias(std::size_t(B * Lkp)), nobias(static_cast<std::size_t>(Lkp));
  key_bias(a, Lkp, bias.p);
  std::fill(nobias.p, nobias.p + Lkp, A(0));
  parallel_for(BH, thr, [&](std::int64_t bh) {
    const std::int64_t b = bh / H, h = bh % H;
    const T* kb = k + b * a.ks[0] + h * a.ks[1];
    const std::uint8_t* mb = a.mask ? a.mask + b * Lk : nullptr;
    pack_panels<T, A, NW>(kb, a.ks[2], Lk, D, npanels, mb, kpan.p + bh * Lkp * D);
    pack_panels<T, A, NW>(v + b * a.vs[0] + h * a.vs[1], a.vs[2], Lk, D, npanels, mb, vpan.p + bh * Lkp * D);
    pack_rows(kb, a.ks[2], Lk, Lkp, D, Dp, mb, krow.p + bh * Lkp * Dp);
  });

  // a padding key's gradients are 0 whatever the queries hold (a NaN query's P would be NaN there)
  const auto pad = [&a](std::int64_t b, std::int64_t j) { return a.mask && a.mask[b * a.Lk + j]; };

  // ---- tasks: (bh, chunk of query blocks)
  const std::int64_t MB = 64;
  const std::int64_t qblocks = (Lq + MB - 1) / MB;
  const std::int64_t want = (4 * std::int64_t(thr) + BH - 1) / BH;  // chunks per head for ~4 tasks a thread
  const std::int64_t nch = std::max<std::int64_t>(1, std::min(want, qblocks));
  const std::int64_t blocks_per = std::max<std::int64_t>(1, (qblocks + nch - 1) / nch);
  const std::int64_t KTr = (KT + kRB - 1) / kRB * kRB;  // transposed tiles: keys rounded to kRB rows
  Buf<A> partial(nch > 1 ? std::size_t(BH * nch * 2 * Lkp * Dp) : 0);
  parallel_for(BH * nch, thr, [&](std::int64_t t) {
    const std::int64_t bh = t / nch, ch = t % nch;
    const std::int64_t b = bh / H, h = bh % H;
    const A* kp = kpan.p + bh * Lkp * D;
    const A* vp = vpan.p + bh * Lkp * D;
    const A* kr = krow.p + bh * Lkp * Dp;
    const A* bi = bias.p + b * Lkp;
    Buf<A> own(nch > 1 ? 0 : std::size_t(2 * Lkp * Dp));
    A* dK = nch > 1 ? partial.p + (bh * nch + ch) * 2 * Lkp * Dp : own.p;
    A* dV = dK + Lkp * Dp;
    std::memset(dK, 0, sizeof(A) * std::size_t(2 * Lkp * Dp));
    const std::int64_t Rmax = ((MB + MR - 1) / MR * MR + kRB - 1) / kRB * kRB;  // Rp of a full block
    Buf<A> Qb(std::size_t(Rmax * Dp)), Gb(std::size_t(Rmax * Dp)), dQ(std::size_t(Rmax * Dp));
    Buf<A> P(std::size_t(Rmax * KT)), dS(std::size_t(Rmax * KT));
    Buf<A> Pt(std::size_t(KTr * Rmax)), dSt(std::size_t(KTr * Rmax));
    std::vector<const A*> qrow(static_cast<std::size_t>(Rmax)), grow(static_cast<std::size_t>(Rmax));
    std::vector<A> L(static_cast<std::size_t>(Rmax)), delta(static_cast<std::size_t>(Rmax));
    for (std::int64_t blk = ch * blocks_per; blk < std::min(qblocks, (ch + 1) * blocks_per); ++blk) {
      const std::int64_t m0 = blk * MB, rows = std::min(MB, Lq - m0);
      const std::int64_t R = (rows + MR - 1) / MR * MR, Rp = (R + kRB - 1) / kRB * kRB;
      const T* qsrc = q + b * a.qs[0] + h * a.qs[1] + m0 * a.qs[2];
      const T* gsrc = dout + b * a.os[0] + h * a.os[1] + m0 * a.os[2];
      const T* osrc = out + b * a.os[0] + h * a.os[1] + m0 * a.os[2];
      pack_rows(qsrc, a.qs[2], rows, Rp, D, Dp, nullptr, Qb.p);
      pack_rows(gsrc, a.os[2], rows, Rp, D, Dp, nullptr, Gb.p);
      for (std::int64_t r = 0; r < Rp; ++r) {
        qrow[r] = Qb.p + r * Dp;
        grow[r] = Gb.p + r * Dp;
        A s = 0;
        if (r < rows)
          for (std::int64_t d = 0; d < D; ++d) s += Gb.p[r * Dp + d] * A(to_acc(osrc[r * a.os[2] + d]));
        delta[r] = s;
        L[r] = r < rows ? lse[bh * Lq + m0 + r] : NEG;  // padding rows: P = 0
        if (L[r] == NEG)  // a row without keys takes no part (0 * NaN from its q or dout would)
          for (std::int64_t d = 0; d < Dp; ++d) Qb.p[r * Dp + d] = Gb.p[r * Dp + d] = A(0);
      }
      std::memset(dQ.p, 0, sizeof(A) * std::size_t(Rp * Dp));
      const std::int64_t Lv = a.causal ? std::min(Lk, m0 + rows) : Lk;  // keys any row of the block sees
      const std::int64_t nvis = (Lv + NW - 1) / NW;
      for (std::int64_t pt = 0; pt < nvis; pt += geo.tile_panels) {
        const std::int64_t pe = std::min(nvis, pt + geo.tile_panels);
        const std::int64_t j0 = pt * NW, nk = geo.tile_keys(pt, pe, Lv), nkv = std::min(nk, Lv - j0);
        const std::int64_t nkr = (nkv + kRB - 1) / kRB * kRB;
        qk_tile(qrow.data(), R, kp, bi, D, scale, pt, pe, nk, P.p, KT);
        qk_tile(grow.data(), R, vp, nobias.p, D, A(1), pt, pe, nk, dS.p, KT);
        for (std::int64_t r = 0; r < Rp; ++r) {
          A* pr = P.p + r * KT;
          A* sr = dS.p + r * KT;
          const A Lr = L[r], Lu = Lr == NEG ? A(0) : Lr, dl = delta[r];
          // keys of this row: [0, jv) of the tile (causal: up to the diagonal)
          const std::int64_t jv = a.causal ? std::max<std::int64_t>(0, std::min(nkv, m0 + r + 1 - j0)) : nkv;
          if (Lr == NEG) {  // fully masked or padding row: no probability, no gradient
            std::fill(pr, pr + nkr, A(0));
            std::fill(sr, sr + nkr, A(0));
          } else {
#pragma omp simd
            for (std::int64_t j = 0; j < jv; ++j) {
              const A pj = exp_a(pr[j] - Lu);
              pr[j] = pj;
              sr[j] = pj * (sr[j] - dl);
            }
            for (std::int64_t j = jv; j < nkr; ++j) pr[j] = sr[j] = A(0);
          }
          for (std::int64_t j = 0; j < nkr; ++j) {  // transposed copies for dV, dK
            Pt.p[j * Rp + r] = pr[j];
            dSt.p[j * Rp + r] = sr[j];
          }
        }
        if (a.causal) {  // query row r: keys up to m0 + r; key j0 + j: queries from it on
          pv_tile_band(dS.p, KT, Rp, kr + j0 * Dp, Dp, nkv, Dh, dQ.p, Dp, -kUnbounded, m0 + 1 - j0);
          pv_tile_band(Pt.p, Rp, nkr, Gb.p, Dp, R, Dh, dV + j0 * Dp, Dp, j0 - m0, kUnbounded);
          pv_tile_band(dSt.p, Rp, nkr, Qb.p, Dp, R, Dh, dK + j0 * Dp, Dp, j0 - m0, kUnbounded);
        } else {
          pv_tile(dS.p, KT, Rp, kr + j0 * Dp, Dp, nkv, Dh, dQ.p, Dp);
          pv_tile(Pt.p, Rp, nkr, Gb.p, Dp, R, Dh, dV + j0 * Dp, Dp);
          pv_tile(dSt.p, Rp, nkr, Qb.p, Dp, R, Dh, dK + j0 * Dp, Dp);
        }
      }
      T* dqb = dq + b * a.qs[0] + h * a.qs[1] + m0 * a.qs[2];
      for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t d = 0; d < D; ++d) dqb[r * a.qs[2] + d] = from_acc<T>(A(dQ.p[r * Dp + d] * scale));
    }
    if (nch == 1) {
      for (std::int64_t j = 0; j < Lk; ++j) {
        T* dkr = dk + b * a.ks[0] + h * a.ks[1] + j * a.ks[2];
        T* dvr = dv + b * a.vs[0] + h * a.vs[1] + j * a.vs[2];
        const bool padding = pad(b, j);
        for (std::int64_t d = 0; d < D; ++d) {
          dkr[d] = from_acc<T>(padding ? A(0) : A(dK[j * Dp + d] * scale));
          dvr[d] = from_acc<T>(padding ? A(0) : dV[j * Dp + d]);
        }
      }
    }
  });
  if (nch > 1) {  // sum the chunks' partials in chunk order
    parallel_for(BH, thr, [&](std::int64_t bh) {
      const std::int64_t b = bh / H, h = bh % H;
      const A* base = partial.p + bh * nch * 2 * Lkp * Dp;
      for (std::int64_t j = 0; j < Lk; ++j) {
        T* dkr = dk + b * a.ks[0] + h * a.ks[1] + j * a.ks[2];
        T* dvr = dv + b * a.vs[0] + h * a.vs[1] + j * a.vs[2];
        for (std::int64_t d = 0; d < D; ++d) {
          A sk = 0, sv = 0;
          for (std::int64_t c = 0; c < nch; ++c) {
            sk += base[c * 2 * Lkp * Dp + j * Dp + d];
            sv += base[c * 2 * Lkp * Dp + Lkp * Dp + j * Dp + d];
          }
          dkr[d] = from_acc<T>(pad(b, j) ? A(0) : A(sk * scale));
          dvr[d] = from_acc<T>(pad(b, j) ? A(0) : sv);
        }
      }
    });
  }
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
