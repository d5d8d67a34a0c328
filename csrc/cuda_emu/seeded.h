// Seeded-bug kernels of genkernels._C_cuemu (csrc/cuda_emu/seeded.cpp).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace gk {
// Runs test kernel `name` on float buffers at out / in (host addresses) with integer arguments n.
void seeded_kernel(const std::string& name, std::uintptr_t out, std::uintptr_t in, const std::vector<long long>& n);
}  // namespace gk
