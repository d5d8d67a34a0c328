// genkernels._C_cuemu: the CUDA kernels of csrc/cuda/*.cu compiled by the host compiler and run on
// the CPU through csrc/cuda_emu/emu.h (tests only: slow, one block at a time). Same calling
// convention as genkernels._C: kernel(dtype, ptrs, ints, floats, threads) on host memory; `threads`
// is ignored (a block runs as blockDim threads).
#include "common/bind.h"
#include "cuda/launch.h"

PYBIND11_MODULE(_C_cuemu, m) {
  m.doc() = "genkernels CUDA kernels emulated on the CPU (tests only)";
  m.attr("archs") = gk::cuda_archs();
#define GK_KERNEL(name)                                                                      \
  m.def(#name, [](int dtype, std::vector<std::uintptr_t> p, std::vector<std::int64_t> n,     \
                  std::vector<std::int64_t> i,                                             \
                  std::vector<double> f, int /*threads*/) {                                  \
    gk::Flat a = gk::make_flat(dtype, std::move(p), std::move(n), std::move(i), std::move(f)); \
    pybind11::gil_scoped_release nogil;                                                      \
    gk::cuda_##name(a, 0, 0);                                                                \
  });
#include "cuda/kernels.def"
#undef GK_KERNEL
}
