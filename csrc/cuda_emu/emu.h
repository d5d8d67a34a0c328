// Host emulation of the CUDA execution model, for compiling csrc/cuda/*.cu with the host compiler
// (g++ -x c++) into genkernels._C_cuemu: the same kernel source runs on the CPU in CI.
// Included by csrc/cuda/common.cuh when __CUDACC__ is not defined; nothing here is seen by nvcc.
//
//   - a launch (GK_LAUNCH in common.cuh) runs the grid's blocks one at a time, each block as
//     blockDim std::threads (created once per launch and reused for every block)
//   - __syncthreads: a block barrier; threads that have returned from the kernel no longer count
//     (as on the GPU); __shfl_xor_sync: lanes of a warp (32 consecutive threads) exchange values
//     through a per-warp buffer between two per-warp barriers
//   - __shared__ variables become function-local statics: shared by the block's threads, valid
//     because blocks run one after the other
//   - the CUDA runtime calls of common.cuh are renamed to host stubs (malloc'd "device" memory, no
//     memory pools, one device): nothing links libcudart
// Only the subset the genkernels kernels use; dynamic shared memory is not supported.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <functional>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <math.h>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#undef __global__
#define __global__
#undef __device__
#define __device__
#undef __host__
#define __host__
#undef __shared__
#define __shared__ static
#undef __launch_bounds__
#define __launch_bounds__(...)
#undef __forceinline__
#define __forceinline__ inline

namespace gk {
namespace emu {

// Barrier of a fixed set of threads where a thread may leave for good (exit()): the phase completes
// when every thread still present has arrived.
class ExitBarrier {
 public:
  void reset(int n) { expected_ = n; arrived_ = 0; }
  std::function<void()> on_complete;  // run by the last thread to arrive, before the others resume
  void arrive_and_wait() {
    std::unique_lock<std::mutex> lk(mu_);
    const unsigned long long gen = gen_;
    if (++arrived_ >= expected_) {
      complete();
      return;
    }
    cv_.wait(lk, [&] { return gen_ != gen; });
  }
  void exit() {
    std::lock_guard<std::mutex> lk(mu_);
    --expected_;
    if (arrived_ > 0 && arrived_ >= expected_) complete();
  }

 private:
  void complete() {
    if (on_complete) on_complete();
    arrived_ = 0;
    ++gen_;
    cv_.notify_all();
  }
  std::mutex mu_;
  std::condition_variable cv_;
  int expected_ = 0, arrived_ = 0;
  unsigned long long gen_ = 0;
};

struct Warp {
  ExitBarrier bar;
  alignas(16) unsigned char slot[32][16];
};

struct Ctx {
  ExitBarrier block;
  std::vector<std::unique_ptr<Warp>> warps;
};

inline Ctx*& ctx() { static Ctx* c = nullptr; return c; }
inline dim3& grid_dim() { static dim3 d; return d; }
inline dim3& block_dim() { static dim3 d; return d; }
inline uint3& thread_idx() { thread_local uint3 t{0, 0, 0}; return t; }
inline uint3& block_idx() { thread_local uint3 b{0, 0, 0}; return b; }
inline int& lane_id() { thread_local int l = 0; return l; }
inline Warp*& my_warp() { thread_local Warp* w = nullptr; return w; }

inline void syncthreads() { ctx()->block.arrive_and_wait(); }

template <class T>
T shfl_xor(T v, int lane_mask, int width = 32) {
  static_assert(sizeof(T) <= 16, "shuffle of a value over 16 bytes");
  Warp& w = *my_warp();
  const int lane = lane_id();
  int src = lane ^ lane_mask;
  if (src >= (lane / width + 1) * width) src = lane;  // a later segment: own value, as CUDA does
  std::memcpy(w.slot[lane], &v, sizeof(T));
  w.bar.arrive_and_wait();
  T r;
  std::memcpy(&r, w.slot[src], sizeof(T));
  w.bar.arrive_and_wait();  // nobody overwrites a slot before every lane has read it
  return r;
}

inline dim3 to_dim3(dim3 d) { return d; }
inline dim3 to_dim3(unsigned v) { return dim3(v); }
inline dim3 to_dim3(int v) {
  if (v < 0) throw std::invalid_argument("emulated CUDA launch: negative dimension");
  return dim3(unsigned(v));
}

// The configuration of one launch; operator() with the kernel's arguments runs it.
template <class K>
struct Launch {
  K kernel;
  dim3 grid, block;
  template <class... Args>
  void operator()(Args... args) const {
    const unsigned nt = block.x * block.y * block.z;
    if (nt == 0 || nt > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0) return;  // invalid config
    Ctx c;
    const int nwarps = int((nt + 31) / 32);
    for (int i = 0; i < nwarps; ++i) c.warps.emplace_back(new Warp);
    ctx() = &c;
    grid_dim() = grid;
    block_dim() = block;
    auto reset = [&] {
      c.block.reset(int(nt));
      for (int i = 0; i < nwarps; ++i) c.warps[i]->bar.reset(std::min(32, int(nt) - 32 * i));
    };
    reset();
    ExitBarrier between;  // every thread done with a block: reset the block's barriers
    between.reset(int(nt));
    between.on_complete = [&] {
      reset();
      between.reset(int(nt));
    };
    auto body = [&](unsigned t) {
      thread_idx() = uint3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
      lane_id() = int(t % 32);
      my_warp() = c.warps[t / 32].get();
      for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
          for (unsigned x = 0; x < grid.x; ++x) {
            block_idx() = uint3{x, y, z};
            kernel(args...);
            my_warp()->bar.exit();
            c.block.exit();
            between.arrive_and_wait();
          }
    };
    std::vector<std::thread> threads;
    threads.reserve(nt);
    for (unsigned t = 0; t < nt; ++t) threads.emplace_back(body, t);
    for (auto& t : threads) t.join();
    ctx() = nullptr;
  }
};

struct Config {
  dim3 grid, block;
  template <class K>
  Launch<K*> operator()(K* kernel) const { return {kernel, grid, block}; }
};

template <class G, class B>
Config config(G grid, B block, std::size_t smem, cudaStream_t) {
  if (smem) throw std::invalid_argument("emulated CUDA launch: dynamic shared memory is not supported");
  return {to_dim3(grid), to_dim3(block)};
}

// ---------------------------------------------------------------- CUDA runtime stubs (one device)
inline cudaError_t& last_error() { thread_local cudaError_t e = cudaSuccess; return e; }
inline cudaError_t get_last_error() { cudaError_t e = last_error(); last_error() = cudaSuccess; return e; }
inline const char* get_error_string(cudaError_t e) { return e == cudaSuccess ? "no error" : "emulated CUDA error"; }
inline cudaError_t get_device(int* d) { *d = 0; return cudaSuccess; }
inline cudaError_t set_device(int d) { return d == 0 ? cudaSuccess : cudaErrorInvalidDevice; }
inline int sm_count() {
  const char* s = std::getenv("GK_EMU_SM_COUNT");  // sizes the grids; small keeps emulation fast
  const int v = s ? std::atoi(s) : 2;
  return v > 0 ? v : 2;
}
inline cudaError_t device_get_attribute(int* v, cudaDeviceAttr a, int) {
  *v = a == cudaDevAttrMultiProcessorCount ? sm_count() : 0;  // no memory pools
  return cudaSuccess;
}
inline cudaError_t malloc_(void** p, std::size_t n) {
  *p = std::malloc(n ? n : 1);
  if (!*p) return cudaErrorMemoryAllocation;
  std::memset(*p, 0x7f, n);  // garbage: a kernel reading scratch before writing it shows
  return cudaSuccess;
}
inline cudaError_t free_(void* p) { std::free(p); return cudaSuccess; }
inline cudaError_t no_pool(...) { return cudaErrorNotSupported; }

}  // namespace emu
}  // namespace gk

#define threadIdx (::gk::emu::thread_idx())
#define blockIdx (::gk::emu::block_idx())
#define blockDim (::gk::emu::block_dim())
#define gridDim (::gk::emu::grid_dim())
#define __syncthreads() ::gk::emu::syncthreads()
#define __shfl_xor_sync(mask, v, ...) ::gk::emu::shfl_xor(v, __VA_ARGS__)
#define __expf expf
#define cudaGetLastError ::gk::emu::get_last_error
#define cudaGetErrorString ::gk::emu::get_error_string
#define cudaGetDevice ::gk::emu::get_device
#define cudaSetDevice ::gk::emu::set_device
#define cudaDeviceGetAttribute ::gk::emu::device_get_attribute
#define cudaMalloc(p, n) ::gk::emu::malloc_(reinterpret_cast<void**>(p), n)
#define cudaFree ::gk::emu::free_
#define cudaMemPoolCreate ::gk::emu::no_pool
#define cudaMemPoolSetAttribute ::gk::emu::no_pool
#define cudaMallocFromPoolAsync ::gk::emu::no_pool
#define cudaFreeAsync ::gk::emu::no_pool
