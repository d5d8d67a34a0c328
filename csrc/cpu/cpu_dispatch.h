#pragma once
#include "common/flat_args.h"

namespace gk {
const char* cpu_isa();  // "avx512", "avx2" or "base": the build the kernels run
#define GK_KERNEL(name) void cpu_##name(const Flat&, int threads);
#include "cpu/kernels.def"
#undef GK_KERNEL
}  // namespace gk
