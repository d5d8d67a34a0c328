// CPU DDIM / DDPM step with fused classifier-free guidance: one pass over the inputs, one write of
// each output. Semantics and argument order: csrc/common/ddim_args.h.
//
// Per-sample coefficients are formed once in double; the element loop is branch-free float math
// (double for float64 data) that the compiler vectorises, with 16-bit storage converted on load/store.
// Work is split into flat chunks (cut where samples change), claimed dynamically by the thread pool.
// Outputs too large for the cache are written with non-temporal stores.
#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define GK_HAVE_STREAM 1
#endif

#include "common/ddim_args.h"
#include "cpu/parallel.h"
#include "cpu/vec_math.h"

namespace gk {
namespace GK_ISA {
namespace {

// float -> half bits, round to nearest even, integer/select only so that the loop vectorises
// (GCC 12 keeps _Float16 conversions scalar). Overflow -> inf, NaN -> quiet NaN, subnormals exact.
static inline std::uint16_t float_to_half_bits(float f) {
  const std::uint32_t u = float_to_bits(f), sign = (u >> 16) & 0x8000u, a = u & 0x7FFFFFFFu;
  // normal range: rebias the exponent and round on bit 13 (ties to even)
  const std::uint32_t normal = (a + 0xC8000FFFu + ((a >> 13) & 1u)) >> 13;  // 0xC8000000 = (15-127) << 23
  // subnormal/zero: adding 0.5 (2^-1) aligns the 10 mantissa bits at the bottom, rounding by the FPU
  const std::uint32_t sub = float_to_bits(bits_to_float(a) + 0.5f) - 0x3F000000u;
  std::uint32_t h = a < 0x38800000u ? sub : normal;         // below 2^-14: subnormal half
  h = a >= 0x47800000u ? 0x7C00u : h;                        // >= 65536 (and inf): inf
  h = a > 0x7F800000u ? 0x7E00u : h;                         // NaN
  return static_cast<std::uint16_t>(h | sign);
}

template <class T> static inline T store(float v) { return from_acc<T>(v); }
template <class T> static inline T store(double v) { return from_acc<T>(v); }
template <> inline half_t store<half_t>(float v) { return static_cast<half_t>(float_to_half_bits(v)); }

template <class T, bool GUIDE, bool CLIP, bool NOISE>
void step_loop(const T* __restrict x, const T* __restrict mu, const T* __restrict mc, const T* __restrict z,
               T* __restrict prev, T* __restrict x0o, std::int64_t n, const StepCoef<acc_t<T>>& k,
               acc_t<T> s, acc_t<T> r) {
  using A = acc_t<T>;
  const StepCoef<A> kk = k;  // (a local copy: loop-invariant for the vectoriser)
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) {
    A m;
    if (GUIDE) {
      const A u = to_acc(mu[i]);
      m = u + s * (to_acc(mc[i]) - u);
    } else {
      m = to_acc(mu[i]);
    }
    A p, x0;
    step_element<A>(kk, CLIP, NOISE, to_acc(x[i]), m, NOISE ? to_acc(z[i]) : A(0), r, p, x0);
    prev[i] = store<T>(p);
    x0o[i] = store<T>(x0);
  }
}

#if defined(__F16C__)
// half <-> float with the F16C / AVX-512 conversion instructions (one each per 8 / 16 values).
static inline void half_in(const half_t* src, float* dst, std::int64_t n) {
  std::int64_t j = 0;
#if defined(__AVX512F__)
  for (; j + 16 <= n; j += 16)
    _mm512_store_ps(dst + j, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + j))));
#endif
  for (; j + 8 <= n; j += 8)
    _mm256_store_ps(dst + j, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + j))));
  for (; j < n; ++j) dst[j] = to_acc(src[j]);
}
static inline void half_out(const float* src, half_t* dst, std::int64_t n) {
  std::int64_t j = 0;
#if defined(__AVX512F__)
  for (; j + 16 <= n; j += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + j),
                        _mm512_cvtps_ph(_mm512_load_ps(src + j), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#endif
  for (; j + 8 <= n; j += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + j),
                     _mm256_cvtps_ph(_mm256_load_ps(src + j), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  for (; j < n; ++j) dst[j] = store<half_t>(src[j]);
}
#endif

template <class T>
static inline void cvt_in(const T* __restrict src, float* __restrict dst, std::int64_t n) {
#if defined(__F16C__)
  if constexpr (std::is_same<T, half_t>::value) { half_in(src, dst, n); return; }
#endif
#pragma omp simd
  for (std::int64_t j = 0; j < n; ++j) dst[j] = to_acc(src[j]);
}
template <class T>
static inline void cvt_out(const float* __restrict src, T* __restrict dst, std::int64_t n) {
#if defined(__F16C__)
  if constexpr (std::is_same<T, half_t>::value) { half_out(src, dst, n); return; }
#endif
#pragma omp simd
  for (std::int64_t j = 0; j < n; ++j) dst[j] = store<T>(src[j]);
}

// One range of elements. 16-bit data goes through float staging blocks in L1 (simple conversion
// loops, the F16C instructions for half where the ISA has them); float/double run the loop directly.
template <class T, bool GUIDE, bool CLIP, bool NOISE>
void step_range(const T* __restrict x, const T* __restrict mu, const T* __restrict mc, const T* __restrict z,
                T* __restrict prev, T* __restrict x0o, std::int64_t n, const StepCoef<acc_t<T>>& k,
                acc_t<T> s, acc_t<T> r) {
  if constexpr (std::is_same<T, half_t>::value || std::is_same<T, bf16_t>::value) {
    constexpr std::int64_t B = 512;
    alignas(64) float xb[B], ub[B], cb[GUIDE ? B : 1], zb[NOISE ? B : 1], pb[B], ob[B];
    for (std::int64_t i = 0; i < n; i += B) {
      const std::int64_t len = std::min(B, n - i);
      cvt_in(x + i, xb, len);
      cvt_in(mu + i, ub, len);
      if (GUIDE) cvt_in(mc + i, cb, len);
      if (NOISE) cvt_in(z + i, zb, len);
      step_loop<float, GUIDE, CLIP, NOISE>(xb, ub, cb, zb, pb, ob, len, k, s, r);
      cvt_out(pb, prev + i, len);
      cvt_out(ob, x0o + i, len);
    }
    return;
  }
  step_loop<T, GUIDE, CLIP, NOISE>(x, mu, mc, z, prev, x0o, n, k, s, r);
}

// Copies nbytes from a cache-resident buffer to dst with non-temporal stores (dst 64-byte aligned):
// outputs too large to stay in cache skip the read-for-ownership of ordinary stores.
static inline void stream_out(void* dst, const void* src, std::size_t nbytes) {
#ifdef GK_HAVE_STREAM
  char* d = static_cast<char*>(dst);
  const char* s = static_cast<const char*>(src);
  std::size_t i = 0;
#if defined(__AVX512F__)
  for (; i + 64 <= nbytes; i += 64)
    _mm512_stream_si512(reinterpret_cast<__m512i*>(d + i), _mm512_load_si512(reinterpret_cast<const void*>(s + i)));
#elif defined(__AVX__)
  for (; i + 32 <= nbytes; i += 32)
    _mm256_stream_si256(reinterpret_cast<__m256i*>(d + i), _mm256_load_si256(reinterpret_cast<const __m256i*>(s + i)));
#else
  for (; i + 16 <= nbytes; i += 16)
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i), _mm_load_si128(reinterpret_cast<const __m128i*>(s + i)));
#endif
  if (i < nbytes) std::memcpy(d + i, s + i, nbytes - i);
#else
  std::memcpy(dst, src, nbytes);
#endif
}

// The same range through an L1-resident staging block, written out with non-temporal stores.
template <class T, bool GUIDE, bool CLIP, bool NOISE>
void step_range_nt(const T* __restrict x, const T* __restrict mu, const T* __restrict mc, const T* __restrict z,
                   T* __restrict prev, T* __restrict x0o, std::int64_t n, const StepCoef<acc_t<T>>& k,
                   acc_t<T> s, acc_t<T> r) {
  constexpr std::int64_t B = 1024 / sizeof(T) * 2;  // 2 KiB per output
  alignas(64) T pb[B];
  alignas(64) T ob[B];
  std::int64_t i = 0;
  // ordinary stores up to the first 64-byte boundary of both outputs (they share alignment mod 64 when
  // the tensors do; otherwise everything goes the ordinary way)
  const auto mis = [](const void* p) { return reinterpret_cast<std::uintptr_t>(p) & 63u; };
  if (mis(prev) != mis(x0o) || mis(prev) % sizeof(T)) {
    step_range<T, GUIDE, CLIP, NOISE>(x, mu, mc, z, prev, x0o, n, k, s, r);
    return;
  }
  std::int64_t head = mis(prev) ? std::min<std::int64_t>(n, (64 - mis(prev)) / sizeof(T)) : 0;
  if (head) step_range<T, GUIDE, CLIP, NOISE>(x, mu, mc, z, prev, x0o, head, k, s, r);
  for (i = head; i < n; i += B) {
    const std::int64_t len = std::min(B, n - i);
    step_range<T, GUIDE, CLIP, NOISE>(x + i, mu + i, GUIDE ? mc + i : mc, NOISE ? z + i : z, pb, ob, len, k, s, r);
    stream_out(prev + i, pb, std::size_t(len) * sizeof(T));
    stream_out(x0o + i, ob, std::size_t(len) * sizeof(T));
  }
#ifdef GK_HAVE_STREAM
  _mm_sfence();
#endif
}

template <class T>
using RangeFn = void (*)(const T*, const T*, const T*, const T*, T*, T*, std::int64_t, const StepCoef<acc_t<T>>&,
                         acc_t<T>, acc_t<T>);

template <class T, bool G, bool C>
RangeFn<T> pick3(bool noise, bool nt) {
  if (nt) return noise ? &step_range_nt<T, G, C, true> : &step_range_nt<T, G, C, false>;
  return noise ? &step_range<T, G, C, true> : &step_range<T, G, C, false>;
}
template <class T, bool G>
RangeFn<T> pick2(bool clip, bool noise, bool nt) {
  return clip ? pick3<T, G, true>(noise, nt) : pick3<T, G, false>(noise, nt);
}

// Outputs larger than this many bytes (together) are written with non-temporal stores.
constexpr std::int64_t kStreamBytes = std::int64_t(24) << 20;

template <class T>
void run(const StepArgs& p, int threads) {
  using A = acc_t<T>;
  const std::int64_t N = p.N, L = p.L;
  if (N <= 0 || L <= 0) return;
  const bool noise = p.noise != nullptr;
  std::vector<StepCoef<A>> coef(N);
  for (std::int64_t n = 0; n < N; ++n) {
    const double at = read_alpha(p.alpha_t, p.at_dtype, p.at_stride, n, p.at);
    const double ap = read_alpha(p.alpha_prev, p.ap_dtype, p.ap_stride, n, p.ap);
    StepCoef<double> k = step_coef<double>(p.kind, p.pred, p.use_clipped, noise, at, ap, p.eta);
    coef[n] = {A(k.A), A(k.B), A(k.G), A(k.H), A(k.K), A(k.S), k.ax, k.hx, k.ky, k.y_x0};
  }
  const T* x = static_cast<const T*>(p.x);
  const T* m = static_cast<const T*>(p.m);
  const T* z = static_cast<const T*>(p.noise);
  T* prev = static_cast<T*>(p.prev);
  T* x0 = static_cast<T*>(p.x0);
  const std::int64_t total = N * L;
  const bool nt = total * std::int64_t(sizeof(T)) * 2 > kStreamBytes;
  RangeFn<T> fn = p.guidance ? pick2<T, true>(p.clip, noise, nt) : pick2<T, false>(p.clip, noise, nt);
  const A s = A(p.gscale), r = A(p.clip_range);

  // Flat chunks of 4K..64K elements (a multiple of 64), about 4 per thread, split where samples
  // change; small steps run inline.
  if (total < (std::int64_t(1) << 15)) threads = 1;
  std::int64_t chunk = (total + std::int64_t(threads) * 4 - 1) / (std::int64_t(threads) * 4);
  chunk = std::min<std::int64_t>(std::max<std::int64_t>(chunk, 4096), 65536);
  chunk = (chunk + 63) / 64 * 64;
  parallel_for((total + chunk - 1) / chunk, threads, [&](std::int64_t t) {
    const std::int64_t hi = std::min(total, (t + 1) * chunk);
    for (std::int64_t e = t * chunk; e < hi;) {
      const std::int64_t n = e / L, i0 = e - n * L, len = std::min(L - i0, hi - e);
      const T* mc = p.guidance ? m + (N + n) * L + i0 : nullptr;
      fn(x + e, m + e, mc, noise ? z + e : nullptr, prev + e, x0 + e, len, coef[n], s, r);
      e += len;
    }
  });
}

}  // namespace

void ddim_step(const Flat& a, int threads) {
  StepArgs p(a);
  by_dtype(a.dtype, "ddim_step", [&](auto t) { run<decltype(t)>(p, threads); });
}

}  // namespace GK_ISA
}  // namespace gk
