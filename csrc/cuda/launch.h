// Host-side declarations shared by the CUDA launchers (*.cu) and the pybind11 module (module.cpp,
// compiled by the host compiler so pybind11 never goes through nvcc).
#pragma once
#include <cstdint>

#include "common/flat_args.h"

namespace gk {
#define GK_KERNEL(name) void cuda_##name(const Flat& a, int device, std::uintptr_t stream);
#include "cuda/kernels.def"
#undef GK_KERNEL
// Compiled-in architectures, e.g. "80;86;89;90", and the CUDA runtime version.
const char* cuda_archs();
int cuda_runtime_version();
}  // namespace gk
