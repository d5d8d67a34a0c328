// genkernels._C_cuda: CUDA kernels. The last two arguments of every kernel are the device index and
// the cudaStream_t (as an integer) that torch is using on it.
#include "common/bind.h"
#include "cuda/launch.h"

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "genkernels CUDA kernels (no torch dependency, static CUDA runtime)";
  m.attr("archs") = gk::cuda_archs();
  m.attr("runtime_version") = gk::cuda_runtime_version();
#define GK_KERNEL(name)                                                                      \
  m.def(#name, [](int dtype, std::vector<std::uintptr_t> p, std::vector<std::int64_t> n,     \
                  std::vector<std::int64_t> i,                                             \
                  std::vector<double> f, int device, std::uintptr_t stream) {                \
    gk::Flat a = gk::make_flat(dtype, std::move(p), std::move(n), std::move(i), std::move(f)); \
    pybind11::gil_scoped_release nogil;                                                      \
    gk::cuda_##name(a, device, stream);                                                      \
  });
#include "cuda/kernels.def"
#undef GK_KERNEL
  m.def("kernel_args", [] {
    pybind11::dict d;
#define GK_KERNEL(name) d[#name] = gk::signature<gk::sig::name>();
#include "cuda/kernels.def"
#undef GK_KERNEL
    return d;
  }, "{kernel: (tensor names, int names, float names)}: the argument names of every kernel, in order");
}
