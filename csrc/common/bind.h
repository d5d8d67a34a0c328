// pybind11 glue shared by _C and _C_cuda: every kernel is exported as
//   name(dtype: int, ptrs: list[int], nbytes: list[int], ints: list[int], floats: list[float], ctx...) -> None
// and runs with the GIL released.
#pragma once
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "common/flat_args.h"

namespace gk {
namespace py = pybind11;

inline Flat make_flat(int dtype, std::vector<std::uintptr_t> p, std::vector<std::int64_t> n,
                      std::vector<std::int64_t> i, std::vector<double> f) {
  return Flat{dtype, std::move(p), std::move(n), std::move(i), std::move(f)};
}

}  // namespace gk
