// Element types and branch-free math that GCC/Clang auto-vectorise (compiled once per ISA).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#ifndef GK_ISA
#define GK_ISA base
#endif

namespace gk {
namespace GK_ISA {

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
template <> inline half_t from_acc<half_t>(float v) {
  _Float16 h = static_cast<_Float16>(v);
  std::uint16_t bits;
  std::memcpy(&bits, &h, 2);
  return static_cast<half_t>(bits);
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

}  // namespace GK_ISA
}  // namespace gk
