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

// 16-bit storage types: converted to float on load, rounded to nearest-even on store.
struct half_t { std::uint16_t bits; };
struct bf16_t { std::uint16_t bits; };

template <class T> struct acc_of { using type = float; };
template <> struct acc_of<double> { using type = double; };
template <class T> using acc_t = typename acc_of<T>::type;

static inline float bits_to_float(std::uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
static inline std::uint32_t float_to_bits(float f) { std::uint32_t u; std::memcpy(&u, &f, 4); return u; }

static inline float to_acc(float v) { return v; }
static inline double to_acc(double v) { return v; }
static inline float to_acc(bf16_t v) { return bits_to_float(std::uint32_t(v.bits) << 16); }
static inline float to_acc(half_t v) {
  _Float16 h; std::memcpy(&h, &v.bits, 2); return static_cast<float>(h);
}

template <class T> static inline T from_acc(float v);
template <> inline float from_acc<float>(float v) { return v; }
template <> inline double from_acc<double>(float v) { return v; }
template <class T> static inline T from_acc(double v) { return static_cast<T>(v); }
template <> inline bf16_t from_acc<bf16_t>(float v) {
  std::uint32_t u = float_to_bits(v);
  std::uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  bool nan = (u & 0x7FFFFFFFu) > 0x7F800000u;
  return bf16_t{static_cast<std::uint16_t>(nan ? ((u >> 16) | 0x40u) : rounded)};
}
template <> inline half_t from_acc<half_t>(float v) {
  _Float16 h = static_cast<_Float16>(v); half_t r; std::memcpy(&r.bits, &h, 2); return r;
}

// exp(x) for float, ~2 ulp, NaN in -> NaN out, saturating to 0 / inf outside [-104, 89].
static inline float exp_f(float x) {
  const float log2e = 1.44269504088896341f, ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
  float xc = x < -104.0f ? -104.0f : (x > 89.0f ? 89.0f : x);
  xc = (x != x) ? x : xc;
  // round to nearest with the 1.5*2^23 trick: vectorises on every ISA (no roundps needed)
  float n = (xc * log2e + 12582912.0f) - 12582912.0f;
  float r = xc - n * ln2_hi - n * ln2_lo;
  // minimax polynomial for e^r on [-ln2/2, ln2/2]
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // 2^n in two steps so that n down to -150 and up to 128 stay representable
  int ni = static_cast<int>(n);
  int n1 = ni / 2, n2 = ni - n1;
  float s1 = bits_to_float(static_cast<std::uint32_t>(n1 + 127) << 23);
  float s2 = bits_to_float(static_cast<std::uint32_t>(n2 + 127) << 23);
  return p * s1 * s2;
}
static inline double exp_f(double x) { return std::exp(x); }

// sigmoid and SiLU in the accumulation type
template <class A> static inline A sigmoid(A z) { return A(1) / (A(1) + exp_f(-z)); }

}  // namespace GK_ISA
}  // namespace gk
