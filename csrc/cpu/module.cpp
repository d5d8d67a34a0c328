// genkernels._C: CPU kernels. The last argument of every kernel is the thread count (torch's).
#include "common/bind.h"
#include "cpu/cpu_dispatch.h"

PYBIND11_MODULE(_C, m) {
  m.doc() = "genkernels CPU kernels (no torch dependency)";
  m.attr("isa") = gk::cpu_isa();
  gk::Kernels<int> k(m, gk::Scratch::kNone);  // ctx: the thread count
#define GK_KERNEL(name) k.def<gk::sig::name>(gk::cpu_##name);
#include "cpu/kernels.def"
#undef GK_KERNEL
  k.def_kernel_args();
}
