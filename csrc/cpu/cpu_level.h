// The x86-64 microarchitecture level of this CPU as the ISA builds need it (CMakeLists.txt compiles them
// for -march=x86-64-v4 / -v3): every feature of the level, with the OS saving the registers it uses.
// GCC >= 12 asks libgcc for the level itself (__builtin_cpu_supports("x86-64-v3")); older GCC and Clang
// do not know those names (a compile error), nor, before GCC 11, every feature's name, so they read the
// CPUID bits and XCR0 themselves. GK_CPU_LEVEL_BY_FEATURES forces the second way (tests compare both).
#pragma once

#if defined(__x86_64__)
#include <cpuid.h>

namespace gk {

// 4, 3, or 0 (below v3) from CPUID and XCR0: the features the x86-64 psABI lists for v2 and v3 (v1 is
// x86-64 itself), then v4's AVX-512 subsets; OSXSAVE + XCR0 say the OS saves ymm (v3) and opmask/zmm (v4).
inline int x86_level_by_features() {
  unsigned a, b, c, d;
  const auto all = [](unsigned reg, unsigned bits) { return (reg & bits) == bits; };
  if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
  // SSE3 0, SSSE3 9, FMA 12, CMPXCHG16B 13, SSE4.1 19, SSE4.2 20, MOVBE 22, POPCNT 23, XSAVE 26,
  // OSXSAVE 27, AVX 28, F16C 29
  if (!all(c, 1u << 0 | 1u << 9 | 1u << 12 | 1u << 13 | 1u << 19 | 1u << 20 | 1u << 22 | 1u << 23 | 1u << 26 |
                  1u << 27 | 1u << 28 | 1u << 29))
    return 0;
  if (!__get_cpuid(0x80000001u, &a, &b, &c, &d) || !all(c, 1u << 0 | 1u << 5)) return 0;  // LAHF-SAHF, LZCNT
  if (__get_cpuid_max(0, nullptr) < 7) return 0;
  __cpuid_count(7, 0, a, b, c, d);
  if (!all(b, 1u << 3 | 1u << 5 | 1u << 8)) return 0;  // BMI1, AVX2, BMI2
  unsigned xlo, xhi;
  __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));  // XCR0 (readable: OSXSAVE is set)
  if (!all(xlo, 0x6)) return 0;  // SSE and AVX state
  // AVX512F 16, AVX512DQ 17, AVX512CD 28, AVX512BW 30, AVX512VL 31; opmask, ZMM_Hi256, Hi16_ZMM state
  return all(b, 1u << 16 | 1u << 17 | 1u << 28 | 1u << 30 | 1u << 31) && all(xlo, 0xE6) ? 4 : 3;
}

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && !defined(GK_CPU_LEVEL_BY_FEATURES)
#define GK_CPU_LEVEL_BUILTIN 1
// libgcc's answer (it reads XCR0 through XGETBV too).
inline int x86_level_builtin() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("x86-64-v4") ? 4 : __builtin_cpu_supports("x86-64-v3") ? 3 : 0;
}
inline int x86_level() { return x86_level_builtin(); }
#else
inline int x86_level() { return x86_level_by_features(); }
#endif

}  // namespace gk
#endif  // __x86_64__
