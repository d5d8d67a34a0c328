// GK_LAUNCH: every kernel launch of csrc/cuda goes through here, and is checked against CUDA's limits
// before it is made, so a configuration the hardware refuses is a clear std::invalid_argument (a
// ValueError in Python) naming the kernel, not a failed launch reported later by cudaGetLastError:
//   grid x <= 2^31 - 1, grid y, z <= 65,535, every extent >= 1 (callers return early on empty work);
//   block <= 1,024 threads (x, y <= 1,024, z <= 64), and no more than the kernel's own
//   maxThreadsPerBlock (its register use can lower it);
//   static + dynamic shared memory <= the device's opt-in limit per block (227 KB on sm_90), dynamic
//   beyond the 48 KB default only for a kernel that opted in (cudaFuncAttributeMaxDynamicSharedMemorySize).
// Extents are taken as 64-bit values, so a size that would wrap in a dim3 is caught, not truncated.
// Under the host compiler (genkernels._C_cuemu) the same checks run, then csrc/cuda_emu/emu.h runs the
// kernel on the CPU.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>

namespace gk {
namespace cu {

// A grid or block extent, from a dim3 or up to three (64-bit) sizes.
struct Extent3 {
  std::int64_t x = 1, y = 1, z = 1;
  Extent3(std::int64_t x_, std::int64_t y_ = 1, std::int64_t z_ = 1) : x(x_), y(y_), z(z_) {}
  Extent3(int x_) : x(x_) {}
  Extent3(unsigned x_) : x(x_) {}
  Extent3(const dim3& d) : x(d.x), y(d.y), z(d.z) {}
  dim3 dim() const { return dim3(unsigned(x), unsigned(y), unsigned(z)); }
};

// What CUDA allows one launch (compute capability >= 3.0 for grid and block; shared memory per device).
struct LaunchLimits {
  static constexpr std::int64_t kGridX = 2147483647, kGridYZ = 65535;
  static constexpr std::int64_t kBlockXY = 1024, kBlockZ = 64, kThreads = 1024;
  static constexpr std::size_t kDefaultDynSmem = 48 * 1024;
};

// What the checks need of one kernel on one device.
struct KernelLimits {
  int max_threads;               // the kernel's maxThreadsPerBlock
  std::size_t static_smem;       // its static __shared__ bytes
  std::size_t max_dyn_smem;      // dynamic shared memory it may request (48 KB unless it opted in)
  std::size_t device_smem_optin; // the device's limit per block (static + dynamic)
};

[[noreturn]] inline void refuse_launch(const char* kernel, const std::string& what) {
  throw std::invalid_argument(std::string("genkernels CUDA: launch of ") + kernel + " refused: " + what);
}

inline void check_extent(const char* kernel, const char* what, std::int64_t v, std::int64_t limit) {
  if (v < 1 || v > limit) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "%s = %lld is outside [1, %lld]", what, (long long)v, (long long)limit);
    refuse_launch(kernel, buf);
  }
}

// Throws if (grid, block, dyn_smem) is outside CUDA's limits or the kernel's.
inline void check_launch(const char* kernel, const Extent3& grid, const Extent3& block, std::size_t dyn_smem,
                         const KernelLimits& k) {
  using L = LaunchLimits;
  check_extent(kernel, "grid.x", grid.x, L::kGridX);
  check_extent(kernel, "grid.y", grid.y, L::kGridYZ);
  check_extent(kernel, "grid.z", grid.z, L::kGridYZ);
  check_extent(kernel, "block.x", block.x, L::kBlockXY);
  check_extent(kernel, "block.y", block.y, L::kBlockXY);
  check_extent(kernel, "block.z", block.z, L::kBlockZ);
  check_extent(kernel, "threads per block", block.x * block.y * block.z,
               k.max_threads < L::kThreads ? k.max_threads : L::kThreads);
  char buf[200];
  if (dyn_smem > k.max_dyn_smem) {
    std::snprintf(buf, sizeof buf, "%zu bytes of dynamic shared memory, the kernel may request %zu", dyn_smem,
                  k.max_dyn_smem);
    refuse_launch(kernel, buf);
  }
  if (k.static_smem + dyn_smem > k.device_smem_optin) {
    std::snprintf(buf, sizeof buf, "%zu + %zu bytes of shared memory per block, the device allows %zu",
                  k.static_smem, dyn_smem, k.device_smem_optin);
    refuse_launch(kernel, buf);
  }
}

// The device's and the kernel's limits, queried once per (kernel, device) and cached.
inline KernelLimits kernel_limits(const void* kernel, int device);

// kernel<<<grid, block, smem, stream>>>(args...) after check_launch; the arguments convert to the
// kernel's parameter types as in a direct launch.
template <class... P>
struct Launch {
  void (*kernel)(P...);
  const char* name;
  Extent3 grid, block;
  std::size_t smem;
  cudaStream_t stream;
  void operator()(P... args) const {
    int device = 0;
    check(cudaGetDevice(&device), "cudaGetDevice");
    check_launch(name, grid, block, smem, kernel_limits(reinterpret_cast<const void*>(kernel), device));
#ifdef __CUDACC__
    kernel<<<grid.dim(), block.dim(), smem, stream>>>(args...);
#else
    ::gk::emu::config(grid.dim(), block.dim(), smem, stream)(kernel)(args...);
#endif
  }
};

template <class... P>
Launch<P...> launch(const Extent3& grid, const Extent3& block, std::size_t smem, cudaStream_t stream,
                    const char* name, void (*kernel)(P...)) {
  return {kernel, name, grid, block, smem, stream};
}

inline KernelLimits query_kernel_limits(const void* kernel, int device) {
#ifdef __CUDACC__
  int optin = 0;
  check(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
        "cudaDeviceGetAttribute(MaxSharedMemoryPerBlockOptin)");
  cudaFuncAttributes fa{};
  check(cudaFuncGetAttributes(&fa, kernel), "cudaFuncGetAttributes");
  return {fa.maxThreadsPerBlock, fa.sharedSizeBytes,
          fa.maxDynamicSharedSizeBytes > 0 ? std::size_t(fa.maxDynamicSharedSizeBytes) : LaunchLimits::kDefaultDynSmem,
          std::size_t(optin)};
#else
  // emulated: sm_90's limit; the emulator itself (csrc/cuda_emu/emu.h) checks a kernel's opt-in
  (void)kernel;
  (void)device;
  return {int(LaunchLimits::kThreads), 0, ::gk::emu::kMaxSmem, ::gk::emu::kMaxSmem};
#endif
}

inline KernelLimits kernel_limits(const void* kernel, int device) {
  static std::mutex mu;
  static std::map<std::pair<const void*, int>, KernelLimits> cache;
  std::lock_guard<std::mutex> lock(mu);
  const auto key = std::make_pair(kernel, device);
  auto it = cache.find(key);
  if (it == cache.end()) it = cache.emplace(key, query_kernel_limits(kernel, device)).first;
  return it->second;
}

}  // namespace cu
}  // namespace gk

// GK_LAUNCH(grid, block, smem, stream, kernel)(args...): the checked launch above. The kernel comes
// last because its template arguments contain commas; grid and block are a dim3 or integer sizes.
#define GK_LAUNCH(grid, block, smem, stream, ...) \
  ::gk::cu::launch(::gk::cu::Extent3(grid), ::gk::cu::Extent3(block), smem, stream, #__VA_ARGS__, __VA_ARGS__)
