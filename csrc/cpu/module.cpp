// genkernels._C: CPU kernels. The last argument of every kernel is the thread count (torch's).
#include "common/bind.h"
#include "cpu/cpu_dispatch.h"

PYBIND11_MODULE(_C, m) {
  m.doc() = "genkernels CPU kernels (no torch dependency)";
  m.attr("isa") = gk::cpu_isa();
#define GK_KERNEL(name)                                                                      \
  m.def(#name, [](int dtype, std::vector<std::uintptr_t> p, std::vector<std::int64_t> n,     \
                  std::vector<std::int64_t> i,                                             \
                  std::vector<double> f, int threads) {                                      \
    gk::Flat a = gk::make_flat(dtype, std::move(p), std::move(n), std::move(i), std::move(f)); \
    pybind11::gil_scoped_release nogil;                                                      \
    gk::cpu_##name(a, threads);                                                              \
  });
#include "cpu/kernels.def"
#undef GK_KERNEL
  m.def("kernel_args", [] {
    pybind11::dict d;
#define GK_KERNEL(name) d[#name] = gk::signature<gk::sig::name>();
#include "cpu/kernels.def"
#undef GK_KERNEL
    return d;
  }, "{kernel: (tensor names, int names, float names)}: the argument names of every kernel, in order");
}
