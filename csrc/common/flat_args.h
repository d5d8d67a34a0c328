// Arguments of every native kernel, flattened so one binding shape serves all ops and both modules:
// tensors as raw device/host addresses (0 = absent), integers, floats, and a dtype code.
// The argument order of each op is documented next to its unpacking code and mirrored in
// genkernels/ops/<op>.py; csrc never sees a torch type.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace gk {

// Must match genkernels/_native.py DTYPE_CODES.
enum DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2, kFloat64 = 3 };

struct Flat {
  int dtype;
  std::vector<std::uintptr_t> p;
  std::vector<std::int64_t> i;
  std::vector<double> f;

  void expect(const char* op, size_t np, size_t ni, size_t nf) const {
    if (p.size() != np || i.size() != ni || f.size() != nf)
      throw std::invalid_argument(std::string(op) + ": wrong number of native arguments");
  }
  template <class T>
  T* ptr(size_t k) const { return reinterpret_cast<T*>(p[k]); }
};

}  // namespace gk
