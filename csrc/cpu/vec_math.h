// Element types and branch-free math that GCC/Clang auto-vectorise (compiled once per ISA).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <stdexcept>
#include <new>
#include <type_traits>

#include "common/by_dtype.h"
#include "common/flat_args.h"

#if defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>
#endif

#ifndef GK_ISA
#define GK_ISA base
#endif

namespace gk {
namespace GK_ISA {

// 64-byte aligned scratch buffer (kernels' per-call workspaces).
template <class T>
struct Buf {
  T* p = nullptr;
  explicit Buf(std::size_t n) {
    std::size_t bytes = (n * sizeof(T) + 63) / 64 * 64;
    if (bytes) {
      p = static_cast<T*>(std::aligned_alloc(64, bytes));
      if (!p) throw std::bad_alloc();
    }
  }
  ~Buf() { std::free(p); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
};

// 16-bit storage types: converted to float on load, rounded to nearest-even on store. Scoped enums
// rather than structs: they are scalars to the vectoriser, and still distinct types for overloading.
enum class half_t : std::uint16_t {};
enum class bf16_t : std::uint16_t {};

template <class T> struct acc_of { using type = float; };
template <> struct acc_of<double> { using type = double; };
template <class T> using acc_t = typename acc_of<T>::type;

static inline float bits_to_float(std::uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
static inline std::uint32_t float_to_bits(float f) { std::uint32_t u; std::memcpy(&u, &f, 4); return u; }

static inline float to_acc(float v) { return v; }
static inline double to_acc(double v) { return v; }
static inline float to_acc(bf16_t v) { return bits_to_float(std::uint32_t(v) << 16); }
// Integer-only half -> float (vectorises on every ISA): the exponent is rebiased by a multiply by
// 2^112, which also turns half subnormals into the right float; inf/NaN get the all-ones exponent.
static inline float to_acc(half_t v) {
  std::uint32_t h = static_cast<std::uint16_t>(v), em = h & 0x7FFFu;
  float f = bits_to_float(em << 13) * 5.192296858534828e+33f;  // 2^112
  f = em >= 0x7C00u ? bits_to_float((em << 13) | 0x7F800000u) : f;
  return bits_to_float(float_to_bits(f) | ((h & 0x8000u) << 16));
}

template <class T> static inline T from_acc(float v);
template <> inline float from_acc<float>(float v) { return v; }
template <> inline double from_acc<double>(float v) { return v; }
template <class T> static inline T from_acc(double v) { return static_cast<T>(v); }
template <> inline bf16_t from_acc<bf16_t>(float v) {
  std::uint32_t u = float_to_bits(v);
  std::uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  bool nan = (u & 0x7FFFFFFFu) > 0x7F800000u;
  return static_cast<bf16_t>(nan ? ((u >> 16) | 0x40u) : rounded);
}
// float -> half, round to nearest even, in integer and select operations only: a _Float16 cast keeps
// GCC 12 from vectorising the loop. Overflow -> inf, NaN -> quiet NaN (sign kept), subnormals exact.
template <> inline half_t from_acc<half_t>(float v) {
  const std::uint32_t u = float_to_bits(v), a = u & 0x7FFFFFFFu;
  // normal halves: rebias the exponent by (15 - 127) << 23 and round on bit 13, ties to even; a carry
  // out of the mantissa lands in the exponent, up to inf
  std::uint32_t h = (a + 0xC8000FFFu + ((a >> 13) & 1u)) >> 13;
  // below 2^-14 (subnormal or zero): adding 0.5 puts the 10 kept bits at the bottom of the mantissa,
  // and the float addition rounds them to nearest even
  const std::uint32_t sub = float_to_bits(bits_to_float(a) + 0.5f) - 0x3F000000u;
  h = a < 0x38800000u ? sub : h;
  h = a >= 0x47800000u ? 0x7C00u : h;  // 65536 and above (inf included): inf
  h = a > 0x7F800000u ? 0x7E00u : h;   // NaN
  return static_cast<half_t>(h | ((u >> 16) & 0x8000u));
}

// exp(x) for float, ~2 ulp; NaN in -> NaN out; 0 below -86.9 (results under 2^-125 flush to zero),
// inf above 88.72.
// Kept short (about 15 vector ops) because SiLU spends most of its time here.
static inline float exp_f(float x) {
  const float log2e = 1.44269504088896341f, ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer in the low mantissa bits
  // Comparisons written so that NaN falls through both clamps unchanged.
  float xc = x < -86.9f ? -86.9f : x;
  xc = xc > 88.72f ? 88.72f : xc;
  float t = xc * log2e + magic;
  float n = t - magic;
  float r = xc - n * ln2_hi - n * ln2_lo;
  float p = 1.9875691500e-4f;  // minimax polynomial for e^r on [-ln2/2, ln2/2]
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  // 2^(n-1) straight from t's bits (bits(t) = 0x4B400000 + n), times 2: n in [-125, 128] stays in range
  float half_scale = bits_to_float((float_to_bits(t) - 0x4B400000u + 126u) << 23);
  float e = (p * half_scale) * 2.0f;
  e = x > 88.72f ? INFINITY : e;
  return x < -86.9f ? 0.0f : e;
}
static inline double exp_f(double x) { return std::exp(x); }

// sigmoid and SiLU in the accumulation type
template <class A> static inline A sigmoid(A z) { return A(1) / (A(1) + exp_f(-z)); }
template <class A> static inline A silu(A z) { return z / (A(1) + exp_f(-z)); }

// e^r for |r| <= ln2/2: degree-6 minimax polynomial, relative error 2e-9 (below float rounding).
// V: float, or a GCC vector of floats.
template <class V> static inline V exp_reduced(V r) {
  V p = 1.3836793369e-03f * r + 8.3748567849e-03f;
  p = p * r + 4.1668228805e-02f;
  p = p * r + 1.6666419804e-01f;
  p = p * r + 4.9999991059e-01f;
  p = p * r + 1.0f;
  return p * r + 1.0f;
}

#if defined(__AVX512F__) && defined(__AVX512BW__)
// ------------------------------------------------------------------ 16-float vectors (AVX-512)
// For loops the auto-vectoriser compiles poorly (SiLU: it keeps the special-case selects of exp_f,
// and the _Float16 conversions scalar). __m512 is a GCC vector type: + - * / work on it, with float
// scalars broadcast.
#define GK_V16 1
using v16f = __m512;

// Element types with a 16-lane load/store (double keeps the scalar loops).
template <class T> constexpr bool has_v16 = !std::is_same<T, double>::value;

static inline v16f load_v16(const float* p) { return _mm512_loadu_ps(p); }
static inline v16f load_v16(const half_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
static inline v16f load_v16(const bf16_t* p) {
  __m512i u = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(u, 16));
}
// float -> 16-bit lanes, with the rounding of from_acc.
static inline __m256i narrow_v16(v16f v, half_t) { return _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
static inline __m256i narrow_v16(v16f v, bf16_t) {
  const __m512i u = _mm512_castps_si512(v), hi = _mm512_srli_epi32(u, 16);
  const __m512i bias = _mm512_add_epi32(_mm512_and_si512(hi, _mm512_set1_epi32(1)), _mm512_set1_epi32(0x7FFF));
  __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, bias), 16);
  r = _mm512_mask_or_epi32(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), hi, _mm512_set1_epi32(0x40));  // NaN
  return _mm512_cvtepi32_epi16(r);
}
static inline void store_v16(float* p, v16f v) { _mm512_storeu_ps(p, v); }
template <class T> static inline void store_v16(T* p, v16f v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), narrow_v16(v, T{}));
}
// Non-temporal stores (p aligned to 16 elements): for outputs too large to stay in cache, they skip
// the read-for-ownership of ordinary stores. Writers end with stream_fence() before the data is
// handed to another thread.
static inline void stream_v16(float* p, v16f v) { _mm512_stream_ps(p, v); }
template <class T> static inline void stream_v16(T* p, v16f v) {
  _mm256_stream_si256(reinterpret_cast<__m256i*>(p), narrow_v16(v, T{}));
}
static inline void stream_fence() { _mm_sfence(); }
static inline v16f splat_v16(float x) { return _mm512_set1_ps(x); }
static inline float sum_v16(v16f v) { return _mm512_reduce_add_ps(v); }

// e^x for 16 floats, within 1.5 ulp for -87 <= x <= 88.7: the reduced exponential scaled by vscalefps
// (no integer exponent tricks, so no special cases); NaN in -> NaN out. x is clamped below to -87 so
// that e^x stays a normal float, and above to 89, past log(FLT_MAX), so that e^x overflows to inf as
// in float32: 1 / (1 + e^-z) is then 0 and z / (1 + e^-z) is -0 for z <= -89 (NaN at -inf), not
// z / 6e37 (-1.7 at z = -1e38).
static inline v16f exp_v16(v16f x) {
  const float log2e = 1.44269504088896341f, ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
  x = _mm512_min_ps(splat_v16(89.0f), _mm512_max_ps(splat_v16(-87.0f), x));  // NaN is the second operand: kept
  const v16f n = _mm512_roundscale_ps(x * log2e, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const v16f r = (x - n * ln2_hi) - n * ln2_lo;  // Cody-Waite: n * ln2_hi is exact
  return _mm512_scalef_ps(exp_reduced(r), n);
}

// 1 / (1 + e^-z), within about 2 ulp (SiLU from it: 2.4 ulp at most, sampled); 0 for z < -88.7, where
// e^z is subnormal.
static inline v16f sigmoid(v16f z) { return 1.0f / (1.0f + exp_v16(-z)); }
// z * sigmoid(z) with one division and no multiply.
static inline v16f silu(v16f z) { return z / (1.0f + exp_v16(-z)); }
#endif

// Calls f(T{}) with T the storage type of dtype code `dtype` (csrc/common/by_dtype.h).
template <class F>
void by_dtype(int dtype, const char* op, F&& f) {
  dispatch_dtype<half_t, bf16_t>(dtype, op, f);
}

}  // namespace GK_ISA
}  // namespace gk
