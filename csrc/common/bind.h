// pybind11 glue shared by _C, _C_cuda and _C_cuemu (gk::Kernels): every kernel is exported as
//   name(dtype: int, ptrs: list[int], nbytes: list[int], ints: list[int], floats: list[float], ctx...) -> None
// and runs with the GIL released; kernel_args() returns {name: (tensor names, int names, float names)}
// from the signatures in csrc/common/*_args.h. The CUDA modules' kernels take one more tensor, their
// scratch `workspace` (last; csrc/cuda/common.cuh scratch()), and each has a size query
//   name_workspace(the same arguments without the workspace) -> bytes.
#pragma once
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <string>
#include <utility>
#include <vector>

#include "common/attention_args.h"
#include "common/ddim_args.h"
#include "common/flat_args.h"
#include "common/norm_args.h"
#include "common/vq_args.h"

namespace gk {
namespace py = pybind11;

// The words of a space-separated name list.
inline py::tuple words(const std::string& s) {
  py::list out;
  std::string w;
  for (char ch : s + ' ') {
    if (ch != ' ') {
      w += ch;
    } else if (!w.empty()) {
      out.append(w);
      w.clear();
    }
  }
  return py::tuple(out);
}

enum class Scratch { kNone, kWorkspace };

// Binds the kernels of one module; Ctx... are the arguments after `floats` (CPU: the thread count;
// CUDA: device index and stream). `launch` is called as launch(const Flat&, Ctx...).
template <class... Ctx>
class Kernels {
 public:
  Kernels(py::module_& m, Scratch scratch) : m_(m), workspace_(scratch == Scratch::kWorkspace) {}

  template <class S, class Launch>
  void def(Launch launch) {
    const bool ws = workspace_;
    m_.def(S::kernel, [launch, ws](int dtype, std::vector<std::uintptr_t> p, std::vector<std::int64_t> n,
                                   std::vector<std::int64_t> i, std::vector<double> f, Ctx... ctx) {
      Flat a{dtype, std::move(p), std::move(n), std::move(i), std::move(f)};
      if (ws) take_workspace(a, S::kernel);
      py::gil_scoped_release nogil;
      launch(a, ctx...);
    });
    if (ws)
      m_.def((std::string(S::kernel) + "_workspace").c_str(),
             [launch](int dtype, std::vector<std::uintptr_t> p, std::vector<std::int64_t> n,
                      std::vector<std::int64_t> i, std::vector<double> f, Ctx... ctx) {
               Flat a{dtype, std::move(p), std::move(n), std::move(i), std::move(f)};
               a.size_query = true;
               {
                 py::gil_scoped_release nogil;
                 launch(a, ctx...);
               }
               return a.needed;
             },
             "bytes of the `workspace` this kernel needs for these arguments (given without it)");
    names_.push_back({S::kernel, std::string(S::ptrs) + (ws ? " workspace" : ""), S::ints, S::floats});
  }

  // kernel_args(), once every kernel is bound.
  void def_kernel_args() {
    m_.def("kernel_args", [names = names_] {
      py::dict d;
      for (const auto& k : names) d[k[0].c_str()] = py::make_tuple(words(k[1]), words(k[2]), words(k[3]));
      return d;
    }, "{kernel: (tensor names, int names, float names)}: the argument names of every kernel, in order");
  }

 private:
  // The last tensor is the call's `workspace`: moved from the tensors to Flat::workspace.
  static void take_workspace(Flat& a, const char* op) {
    if (a.p.empty() || a.n.size() != a.p.size())
      refuse(op, "%s: wrong number of native arguments: one size per tensor, the `workspace` last");
    a.workspace = a.p.back();
    a.workspace_bytes = a.n.back();
    a.p.pop_back();
    a.n.pop_back();
  }

  py::module_& m_;
  bool workspace_;
  std::vector<std::array<std::string, 4>> names_;  // kernel, tensors, ints, floats
};

}  // namespace gk
