// The dtype code -> C++ element type dispatch shared by the CPU and CUDA launchers (host code). Each
// side names its own 16-bit storage types (the CPU kernels' half_t / bf16_t, CUDA's __half /
// __nv_bfloat16) and wraps this in its by_dtype.
#pragma once
#include <stdexcept>
#include <string>

#include "common/flat_args.h"

namespace gk {
GK_ARGS_BEGIN  // (per ISA in the CPU kernels: flat_args.h)

// Calls f(T{}) with T the storage type of dtype code `dtype` (flat_args.h): float, double, Half or
// BFloat16. `op` names the caller in the error for an unknown code.
template <class Half, class BFloat16, class F>
void dispatch_dtype(int dtype, const char* op, F&& f) {
  switch (dtype) {
    case kFloat32: f(float{}); break;
    case kFloat64: f(double{}); break;
    case kFloat16: f(Half{}); break;
    case kBFloat16: f(BFloat16{}); break;
    default: throw std::invalid_argument(std::string(op) + ": unsupported dtype code " + std::to_string(dtype));
  }
}

GK_ARGS_END
}  // namespace gk
