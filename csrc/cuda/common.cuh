// Small device/host helpers shared by the CUDA kernels (csrc/cuda/*.cu). No torch headers.
//   - element types: float, double, __half, __nv_bfloat16; acc_t<T> (double for double, else float);
//     to_acc / from_acc<T> (round to nearest even); 16-byte vector loads/stores (Vec<T, V>)
//   - warp and block reductions (deterministic: fixed shuffle/tree order)
//   - host side: check(), DeviceGuard, sm_count(), as_stream(), is_aligned(), scratch()
//   - GK_LAUNCH, the checked kernel launch (csrc/cuda/launch_limits.cuh)
#pragma once
#ifndef __CUDACC__
#include "cuda_emu/emu.h"  // host-compiler build of the kernels: genkernels._C_cuemu
#endif
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "common/by_dtype.h"
#include "cuda/launch.h"

// GK_DYNAMIC_SHARED(T, name); in a kernel: `T* name`, the launch's dynamic shared memory (GK_LAUNCH's
// smem bytes, 16-byte aligned).
#ifdef __CUDACC__
#define GK_DYNAMIC_SHARED(T, name)                                  \
  extern __shared__ __align__(16) unsigned char gk_dynamic_smem_[]; \
  T* name = reinterpret_cast<T*>(gk_dynamic_smem_)
#else
#define GK_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(::gk::emu::dynamic_smem())
#endif

#ifndef GK_CUDA_ARCHS
#define GK_CUDA_ARCHS "unknown"
#endif

namespace gk {

namespace cu {

// ------------------------------------------------------------------ element types
template <class T> struct acc_of { using type = float; };
template <> struct acc_of<double> { using type = double; };
template <class T> using acc_t = typename acc_of<T>::type;

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

template <class T, class A>
__device__ __forceinline__ T from_acc(A v) {
  if constexpr (std::is_same<T, __half>::value) return __float2half_rn(v);
  else if constexpr (std::is_same<T, __nv_bfloat16>::value) return __float2bfloat16_rn(v);
  else return static_cast<T>(v);
}

// True for the 16-bit storage types (fast-math intrinsics are accurate enough there).
template <class T> constexpr bool is_16bit() { return sizeof(T) == 2; }

// exp in the accumulation type: expf/exp for float32/float64 data (parity), __expf for 16-bit data.
template <class T, class A>
__device__ __forceinline__ A exp_t(A v) {
  if constexpr (std::is_same<A, double>::value) return exp(v);
  else if constexpr (is_16bit<T>()) return __expf(v);
  else return expf(v);
}

// Elements of T per 16-byte vector.
template <class T> constexpr int vec16() { return int(16 / sizeof(T)); }

// V elements loaded/stored together; V * sizeof(T) == 16 gives 128-bit memory instructions.
template <class T, int V>
struct alignas(sizeof(T) * V) Vec { T v[V]; };

template <class T, int V>
__device__ __forceinline__ Vec<T, V> load_vec(const T* p) { return *reinterpret_cast<const Vec<T, V>*>(p); }
template <class T, int V>
__device__ __forceinline__ void store_vec(T* p, const Vec<T, V>& v) { *reinterpret_cast<Vec<T, V>*>(p) = v; }

// ------------------------------------------------------------------ reductions
// Sum over aligned groups of `width` lanes (a power of two <= 32); every lane of the warp must call it.
template <class A>
__device__ __forceinline__ A group_sum(A v, int width = 32) {
  for (int o = width >> 1; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Block-wide sum; blockDim.x a multiple of 32 (at most 1024); every thread must call it.
// The result is valid in thread 0. `scratch` holds at least 32 values.
template <class A>
__device__ __forceinline__ A block_sum(A v, A* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = group_sum(v);
  __syncthreads();  // scratch may be in use by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < nwarps ? scratch[lane] : A(0);
    v = group_sum(v);
  }
  return v;
}

// Count / mean / sum of squared deviations, merged with Chan et al.'s formula (exact for large means).
template <class A>
struct MeanM2 {
  A n, mean, m2;
};

template <class A>
__device__ __forceinline__ MeanM2<A> merge(const MeanM2<A>& a, const MeanM2<A>& b) {
  if (b.n == A(0)) return a;
  if (a.n == A(0)) return b;
  A n = a.n + b.n, d = b.mean - a.mean, fb = b.n / n;
  return {n, a.mean + d * fb, a.m2 + b.m2 + d * d * a.n * fb};
}

// ------------------------------------------------------------------ host side
inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    cudaGetLastError();  // reset the (non-sticky) error state so later calls start clean
    throw std::runtime_error(std::string("genkernels CUDA: ") + what + ": " + cudaGetErrorString(e));
  }
}

// Makes `device` current for the scope of a launcher and restores the caller's device afterwards.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    check(cudaGetDevice(&prev_), "cudaGetDevice");
    if (prev_ != device) check(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() {
    int cur = -1;
    if (cudaGetDevice(&cur) == cudaSuccess && cur != prev_) cudaSetDevice(prev_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = 0;
};

// Streaming multiprocessors of `device` (cached; used to size grids).
inline int sm_count(int device) {
  static std::atomic<int> cache[64];
  if (device >= 0 && device < 64) {
    int v = cache[device].load(std::memory_order_relaxed);
    if (v > 0) return v;
  }
  int v = 0;
  check(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
  if (v <= 0) v = 1;
  if (device >= 0 && device < 64) cache[device].store(v, std::memory_order_relaxed);
  return v;
}

inline cudaStream_t as_stream(std::uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

// Calls f(T{}) with T the element type of dtype code `dtype` (csrc/common/by_dtype.h).
template <class F>
void by_dtype(int dtype, const char* op, F&& f) {
  dispatch_dtype<__half, __nv_bfloat16>(dtype, op, f);
}

inline bool is_aligned(const void* p, std::uintptr_t bytes) {
  return (reinterpret_cast<std::uintptr_t>(p) % bytes) == 0;
}

template <class I>
constexpr I ceil_div(I a, I b) { return (a + b - 1) / b; }

// The scratch memory of one call, `bytes` long, carved from the `workspace` tensor that the Python layer
// allocates with torch's allocator (genkernels/_native.py; its size from a size query: the launcher run
// with Flat::size_query, which records `bytes` here, gets null and returns before launching anything).
// A workspace that is absent, shorter than `bytes` or not 16-byte aligned is refused.
template <class A>
A* scratch(const Flat& a, std::size_t bytes, const char* op) {
  if (a.size_query) {
    a.needed = std::int64_t(bytes);
    return nullptr;
  }
  if (bytes && (a.workspace == 0 || a.workspace_bytes < std::int64_t(bytes)))
    refuse(op, "%s: `workspace` holds %lld bytes, the kernel needs %lld", a.workspace ? a.workspace_bytes : 0,
           std::int64_t(bytes));
  if (bytes && a.workspace % 16) refuse(op, "%s: `workspace` must be 16-byte aligned");
  return reinterpret_cast<A*>(a.workspace);
}

}  // namespace cu
}  // namespace gk

#include "cuda/launch_limits.cuh"  // after check(): its launcher uses it
