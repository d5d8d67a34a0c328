// genkernels._C_cuda: CUDA kernels. The last two arguments of every kernel are the device index and
// the cudaStream_t (as an integer) that torch is using on it; its last tensor is the call's scratch
// `workspace` (torch-allocated, kernel_workspace(...) bytes; address 0 where that is 0).
#include "common/bind.h"
#include "cuda/launch.h"

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "genkernels CUDA kernels (no torch dependency, static CUDA runtime)";
  m.attr("archs") = gk::cuda_archs();
  m.attr("runtime_version") = gk::cuda_runtime_version();
  // ctx: device index, stream
  gk::Kernels<int, std::uintptr_t> k(m, gk::Scratch::kWorkspace);
#define GK_KERNEL(name) k.def<gk::sig::name>(gk::cuda_##name);
#include "cuda/kernels.def"
#undef GK_KERNEL
  k.def_kernel_args();
}
