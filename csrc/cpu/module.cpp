// genkernels._C: CPU kernels. The last argument of every kernel is the thread count (torch's).
#include "common/bind.h"
#include "common/conv_rows_args.h"  // the CPU-only kernel's signature (bind.h has the shared ones)
#include "cpu/cpu_dispatch.h"

PYBIND11_MODULE(_C, m) {
  m.doc() = "genkernels CPU kernels (no torch dependency)";
  m.attr("isa") = gk::cpu_isa();
  pybind11::list built;  // the ISA builds in this module, widest first
#ifdef GK_HAVE_avx512
  built.append("avx512");
#endif
#ifdef GK_HAVE_avx2
  built.append("avx2");
#endif
  built.append("base");
  m.attr("built_isas") = pybind11::tuple(built);
  gk::Kernels<int> k(m, gk::Scratch::kNone);  // ctx: the thread count
#define GK_KERNEL(name) k.def<gk::sig::name>(gk::cpu_##name);
#include "cpu/kernels.def"
#undef GK_KERNEL
  k.def_kernel_args();
}
