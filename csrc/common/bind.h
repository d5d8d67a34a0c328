// pybind11 glue shared by _C, _C_cuda and _C_cuemu: every kernel is exported as
//   name(dtype: int, ptrs: list[int], nbytes: list[int], ints: list[int], floats: list[float], ctx...) -> None
// and runs with the GIL released; kernel_args() returns {name: (tensor names, int names, float names)}
// from the signatures in csrc/common/*_args.h.
#pragma once
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "common/attention_args.h"
#include "common/ddim_args.h"
#include "common/flat_args.h"
#include "common/norm_args.h"
#include "common/vq_args.h"

namespace gk {
namespace py = pybind11;

inline Flat make_flat(int dtype, std::vector<std::uintptr_t> p, std::vector<std::int64_t> n,
                      std::vector<std::int64_t> i, std::vector<double> f) {
  return Flat{dtype, std::move(p), std::move(n), std::move(i), std::move(f)};
}

// The words of a space-separated name list.
inline py::tuple words(const char* s) {
  py::list out;
  std::string w;
  for (; ; ++s) {
    if (*s == ' ' || *s == 0) {
      if (!w.empty()) out.append(w);
      w.clear();
      if (*s == 0) break;
    } else {
      w += *s;
    }
  }
  return py::tuple(out);
}

// (tensor names, int names, float names) of signature S.
template <class S>
py::tuple signature() {
  return py::make_tuple(words(S::ptrs), words(S::ints), words(S::floats));
}

}  // namespace gk
