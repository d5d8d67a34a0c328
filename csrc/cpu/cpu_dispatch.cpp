// Picks, once per process, the best instruction-set build of every CPU kernel for this machine.
#include "cpu/cpu_dispatch.h"
#include "cpu/cpu_level.h"

#include <cstdlib>
#include <cstring>

#define GK_KERNEL(name) void name(const Flat&, int);
#ifdef GK_HAVE_avx512
namespace gk { namespace avx512 {
#include "cpu/kernels.def"
} }
#endif
#ifdef GK_HAVE_avx2
namespace gk { namespace avx2 {
#include "cpu/kernels.def"
} }
#endif
namespace gk { namespace base {
#include "cpu/kernels.def"
} }
#undef GK_KERNEL

namespace gk {

// GENKERNELS_CPU_ISA=base|avx2|avx512 caps the choice (for testing the fallbacks).
const char* cpu_isa() {
  static const char* isa = [] {
    const char* cap = std::getenv("GENKERNELS_CPU_ISA");
    auto allowed = [&](const char* name) { return !cap || !*cap || std::strcmp(cap, name) == 0 ||
                                                  (std::strcmp(cap, "avx512") == 0 && std::strcmp(name, "avx2") == 0); };
#if defined(__x86_64__)
    // the builds are compiled for x86-64 levels: ask for exactly those (cpu_level.h)
    const int level = x86_level();
    (void)level;
#ifdef GK_HAVE_avx512
    if (allowed("avx512") && level >= 4) return "avx512";
#endif
#ifdef GK_HAVE_avx2
    if (allowed("avx2") && level >= 3) return "avx2";
#endif
#endif
    (void)allowed;
    return "base";
  }();
  return isa;
}

#define GK_KERNEL(name)                                                      \
  void cpu_##name(const Flat& a, int threads) {                              \
    static auto fn = [] {                                                    \
      const char* isa = cpu_isa();                                           \
      (void)isa;                                                             \
      GK_PICK_AVX512(name)                                                   \
      GK_PICK_AVX2(name)                                                     \
      return &base::name;                                                    \
    }();                                                                     \
    fn(a, threads);                                                          \
  }
#ifdef GK_HAVE_avx512
#define GK_PICK_AVX512(name) if (std::strcmp(isa, "avx512") == 0) return &avx512::name;
#else
#define GK_PICK_AVX512(name)
#endif
#ifdef GK_HAVE_avx2
#define GK_PICK_AVX2(name) if (std::strcmp(isa, "avx2") == 0) return &avx2::name;
#else
#define GK_PICK_AVX2(name)
#endif
#include "cpu/kernels.def"
#undef GK_KERNEL

}  // namespace gk
