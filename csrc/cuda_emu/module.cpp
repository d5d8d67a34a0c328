// genkernels._C_cuemu: the CUDA kernels of csrc/cuda/*.cu compiled by the host compiler and run on
// the CPU through csrc/cuda_emu/emu.h (tests only: slow, strict). Same calling convention as
// genkernels._C: kernel(dtype, ptrs, nbytes, ints, floats, threads) on host memory; `threads` is ignored
// (a block runs as blockDim threads). As in _C_cuda, the last tensor is the scratch `workspace`, whose
// size kernel_workspace(...) returns. Also: seeded(case, out, in, ints), the seeded-bug kernels of
// seeded.cpp, and shared_bytes, the size of the kernels' static __shared__ memory that emu.h fills.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>

#include "common/bind.h"
#include "cuda/launch.h"
#include "cuda_emu/seeded.h"

extern "C" char gk_emu_shared_begin[], gk_emu_shared_end[];  // shared.ld

// The module is compiled with -fsanitize=alignment and not linked with the UBSan runtime: the
// compiler's checks call these handlers (GCC's ABI), which throw. emu.h reports the error with the
// block and thread that hit it.
namespace {
struct SourceLocation {
  const char* file;
  std::uint32_t line, column;
};
struct TypeDescriptor {
  std::uint16_t kind, info;
  char name[1];
};
struct TypeMismatchData {
  SourceLocation loc;
  const TypeDescriptor* type;
  unsigned char log_alignment, check_kind;
};

[[noreturn]] void misaligned(const TypeMismatchData* d, std::uintptr_t p) {
  static const char* kinds[] = {"load of", "store to", "reference binding to", "member access within",
                                "member call on", "constructor call on", "downcast of", "downcast of",
                                "upcast of", "cast to virtual base of", "nonnull binding to", "dynamic operation on"};
  const char* kind = d->check_kind < sizeof kinds / sizeof *kinds ? kinds[d->check_kind] : "access to";
  char msg[512];
  std::snprintf(msg, sizeof msg, "%s misaligned address 0x%llx for type %s, which needs %u-byte alignment (%s:%u)",
                kind, static_cast<unsigned long long>(p), d->type->name, 1u << d->log_alignment, d->loc.file,
                d->loc.line);
  throw std::runtime_error(msg);
}
// The scratch `workspace` is filled with garbage before the kernel runs (torch.empty gives whatever was
// there, often zeros): a kernel reading scratch before writing it shows.
void poison_workspace(const gk::Flat& a) {
  if (a.workspace && a.workspace_bytes > 0)
    std::memset(reinterpret_cast<void*>(a.workspace), 0x7f, std::size_t(a.workspace_bytes));
}
}  // namespace

// Declared by the compiler as (void*, void*).
extern "C" void __ubsan_handle_type_mismatch_v1(void* d, void* p) {
  misaligned(static_cast<const TypeMismatchData*>(d), reinterpret_cast<std::uintptr_t>(p));
}
extern "C" void __ubsan_handle_type_mismatch_v1_abort(void* d, void* p) {
  misaligned(static_cast<const TypeMismatchData*>(d), reinterpret_cast<std::uintptr_t>(p));
}

PYBIND11_MODULE(_C_cuemu, m) {
  m.doc() = "genkernels CUDA kernels emulated on the CPU (tests only)";
  m.attr("archs") = gk::cuda_archs();
  m.attr("shared_bytes") = static_cast<long long>(gk_emu_shared_end - gk_emu_shared_begin);
  m.def("seeded", [](const std::string& name, std::uintptr_t out, std::uintptr_t in, std::vector<long long> n) {
    pybind11::gil_scoped_release nogil;
    gk::seeded_kernel(name, out, in, n);
  });
  gk::Kernels<int> k(m, gk::Scratch::kWorkspace);  // ctx: the thread count, ignored
#define GK_KERNEL(name) k.def<gk::sig::name>([](const gk::Flat& a, int) { poison_workspace(a); gk::cuda_##name(a, 0, 0); });
#include "cuda/kernels.def"
#undef GK_KERNEL
  k.def_kernel_args();
}
