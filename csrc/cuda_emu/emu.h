// Host emulation of the CUDA execution model, for compiling csrc/cuda/*.cu with the host compiler
// (g++ -x c++) into genkernels._C_cuemu: the same kernel source runs on the CPU in CI.
// Included by csrc/cuda/common.cuh when __CUDACC__ is not defined; nothing here is seen by nvcc.
//
// Strict where a GPU is strict, so that bugs show here rather than on the GPU:
//   - a launch outside CUDA's limits (grid x <= 2^31-1, y/z <= 65,535; block <= 1,024 threads,
//     x/y <= 1,024, z <= 64; dynamic shared memory over 48 KiB without cudaFuncSetAttribute, or over
//     sm_90's 227 KiB) throws instead of running
//   - __shared__ memory, static and dynamic (GK_DYNAMIC_SHARED), is filled with 0xff bytes (NaN in
//     every float type, -1 in integers) before each block: a read before a write shows
//   - warp-synchronous ops (__shfl*_sync, __ballot_sync, __any/__all_sync, __syncwarp) honour their
//     mask: a lane outside the mask, a lane of the mask that leaves the kernel or never arrives, lanes
//     that disagree on the mask (divergent lanes may use disjoint masks at the same time), or a shuffle
//     from a lane outside the mask is an error; so is a deadlock (every running thread waits, at
//     barriers that cannot complete)
//   - blocks run in descending order (a kernel that depends on block order shows), and with
//     GK_EMU_WORKERS=N > 1, on N groups of threads at once for kernels without static __shared__
//     memory (decided after the first block: its shared memory must still hold the fill)
//   - misaligned typed accesses (float4, half2, Vec<T, V> through a pointer not aligned to the type)
//     throw: the module is compiled with -fsanitize=alignment and module.cpp's handler throws
// An error inside a kernel stops the launch; it is rethrown on the launching thread with the block and
// thread that hit it.
//
// Execution: each block runs as blockDim std::threads (created once per launch and reused for every
// block of its worker); __syncthreads is a block barrier that threads which have left the kernel no
// longer count (as on the GPU); warp ops exchange values through a per-warp buffer between two
// per-warp barriers. __shared__ variables are function-local statics: one copy per launch, so the
// blocks of a kernel that uses them run one at a time. The linker script shared.ld gathers them
// (.bss of function statics in gk's anonymous namespaces, where the kernels live) between
// gk_emu_shared_begin and gk_emu_shared_end so that they can be filled. Launches are serialised.
// The CUDA runtime calls of common.cuh are renamed to host stubs (malloc'd "device" memory, no memory
// pools, one device): nothing links libcudart. Only the subset the genkernels kernels use.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <math.h>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
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

extern "C" char gk_emu_shared_begin[], gk_emu_shared_end[];  // shared.ld

namespace gk {
namespace emu {

constexpr unsigned char kFill = 0xff;             // NaN in float/double/half/bfloat16
constexpr std::size_t kDefaultSmem = 48 << 10;    // dynamic shared memory without opt-in
constexpr std::size_t kMaxSmem = 227 << 10;       // sm_90: opt-in maximum per block

inline std::string hex(unsigned v) {
  char b[16];
  std::snprintf(b, sizeof b, "0x%08x", v);
  return b;
}

// The failure of a launch: the first error wins; threads waiting elsewhere see `failed` and unwind.
struct LaunchState {
  std::atomic<bool> failed{false};
  std::mutex mu;
  std::string error;
  void record(const std::string& m) {
    std::lock_guard<std::mutex> lk(mu);
    if (error.empty()) error = m;
    failed = true;
  }
};
struct Aborted {};  // unwinds an emulated thread after a failure

// A warp op in progress: the lanes of `mask` that have reached it. Divergent lanes may run ops with
// disjoint masks at the same time; overlapping masks are an error.
struct WarpOp {
  unsigned mask, arrived;
  const char* op;
};

struct Warp {
  std::condition_variable cv;
  unsigned exists = 0, live = 0;  // lanes with a thread / still in the kernel
  unsigned waiting = 0;           // lanes waiting in an op of `ops`
  std::vector<WarpOp> ops;
  alignas(16) unsigned char slot[32][16];
};

// One worker: the threads that run a block at a time, and the block's barrier state.
struct Block {
  LaunchState* launch = nullptr;
  std::mutex mu;
  std::condition_variable cv, between_cv;
  int nt = 0, live = 0, waiting = 0, arrived = 0, between = 0;
  unsigned long long gen = 0, between_gen = 0;
  std::vector<std::unique_ptr<Warp>> warps;
  std::unique_ptr<unsigned char[]> dyn;  // dynamic shared memory
  std::size_t dyn_bytes = 0;
  uint3 idx{0, 0, 0};
  bool done = false;
};

inline dim3& grid_dim() { static dim3 d; return d; }
inline dim3& block_dim() { static dim3 d; return d; }
inline uint3& thread_idx() { thread_local uint3 t{0, 0, 0}; return t; }
inline uint3& block_idx() { thread_local uint3 b{0, 0, 0}; return b; }
inline int& lane_id() { thread_local int l = 0; return l; }
inline Block*& my_block() { thread_local Block* b = nullptr; return b; }
inline int& warp_id() { thread_local int w = 0; return w; }
inline Warp& my_warp() { return *my_block()->warps[warp_id()]; }

inline std::string where() {
  const uint3 b = block_idx(), t = thread_idx();
  return "block (" + std::to_string(b.x) + "," + std::to_string(b.y) + "," + std::to_string(b.z) + ") thread (" +
         std::to_string(t.x) + "," + std::to_string(t.y) + "," + std::to_string(t.z) + ")";
}

inline void notify_all(Block& B) {
  B.cv.notify_all();
  B.between_cv.notify_all();
  for (auto& w : B.warps) w->cv.notify_all();
}

// Records an error of the calling emulated thread (B.mu held) and unwinds it.
[[noreturn]] inline void fail(Block& B, const std::string& msg) {
  B.launch->record("emulated CUDA, " + where() + ": " + msg);
  notify_all(B);
  throw Aborted{};
}

template <class Pred>
void wait(Block& B, std::unique_lock<std::mutex>& lk, std::condition_variable& cv, Pred done) {
  while (!done()) {
    if (B.launch->failed) throw Aborted{};
    cv.wait_for(lk, std::chrono::milliseconds(100));  // a failure in another worker is polled
  }
}

[[noreturn]] inline void deadlock(Block& B) {
  std::string m = "deadlock: every thread still in the kernel waits, at barriers that cannot complete (";
  m += std::to_string(B.arrived) + " at __syncthreads";
  for (std::size_t i = 0; i < B.warps.size(); ++i) {
    for (const WarpOp& o : B.warps[i]->ops)
      m += "; warp " + std::to_string(i) + ": lanes " + hex(o.arrived) + " in " + o.op + " with mask " + hex(o.mask);
  }
  fail(B, m + ")");
}

// The caller has arrived at a barrier that did not complete: wait until released().
template <class Released>
void block_until(Block& B, std::unique_lock<std::mutex>& lk, std::condition_variable& cv, Released released) {
  if (++B.waiting == B.live) deadlock(B);
  wait(B, lk, cv, released);
}

inline void complete_block_barrier(Block& B) {
  B.waiting -= B.arrived - 1;
  B.arrived = 0;
  ++B.gen;
  B.cv.notify_all();
}

inline void syncthreads() {
  Block& B = *my_block();
  std::unique_lock<std::mutex> lk(B.mu);
  if (B.launch->failed) throw Aborted{};
  if (++B.arrived == B.live) return complete_block_barrier(B);
  const unsigned long long g = B.gen;
  block_until(B, lk, B.cv, [&] { return B.gen != g; });
}

// Arrival of the calling lane at warp op `op` with `mask`; returns when every lane of the mask is there.
inline void warp_arrive(unsigned mask, const char* op) {
  Block& B = *my_block();
  Warp& w = my_warp();
  const unsigned bit = 1u << lane_id();
  std::unique_lock<std::mutex> lk(B.mu);
  if (B.launch->failed) throw Aborted{};
  if (!(mask & bit)) fail(B, std::string(op) + " with mask " + hex(mask) + ", which does not include the calling lane");
  if (mask & ~w.exists)
    fail(B, std::string(op) + " with mask " + hex(mask) + ": lanes " + hex(mask & ~w.exists) + " have no thread in the block");
  if (mask & ~w.live)
    fail(B, std::string(op) + " with mask " + hex(mask) + ": lanes " + hex(mask & ~w.live) + " have left the kernel");
  auto it = std::find_if(w.ops.begin(), w.ops.end(), [&](const WarpOp& o) { return (o.mask & mask) != 0; });
  if (it == w.ops.end()) {
    it = w.ops.insert(w.ops.end(), WarpOp{mask, 0, op});
  } else if (mask != it->mask || std::strcmp(op, it->op) != 0) {
    fail(B, std::string(op) + " with mask " + hex(mask) + " while lanes " + hex(it->arrived) + " wait in " + it->op +
                " with mask " + hex(it->mask) + " (every lane of a mask must make the same call)");
  }
  it->arrived |= bit;
  if (it->arrived == it->mask) {
    B.waiting -= __builtin_popcount(mask) - 1;
    w.waiting &= ~mask;
    w.ops.erase(it);
    w.cv.notify_all();
    return;
  }
  w.waiting |= bit;
  block_until(B, lk, w.cv, [&] { return !(w.waiting & bit); });
}

// Every lane of `mask` publishes v; read(slots) then runs in each of them before any slot is reused.
template <class T, class R>
R warp_exchange(unsigned mask, const T& v, const char* op, const std::function<R(const unsigned char (*)[16])>& read) {
  static_assert(sizeof(T) <= 16, "warp op on a value over 16 bytes");
  Warp& w = my_warp();
  std::memcpy(w.slot[lane_id()], &v, sizeof(T));
  warp_arrive(mask, op);
  R r = read(w.slot);
  warp_arrive(mask, op);  // nobody overwrites a slot before every lane has read it
  return r;
}

template <class T>
T shfl_from(unsigned mask, T v, int src, const char* op) {
  if ((mask >> lane_id() & 1u) && !(mask >> src & 1u)) {  // (a calling lane outside the mask: warp_arrive)
    Block& B = *my_block();
    std::unique_lock<std::mutex> lk(B.mu);
    fail(B, std::string(op) + " with mask " + hex(mask) + " reads lane " + std::to_string(src) + ", which is not in the mask");
  }
  return warp_exchange<T, T>(mask, v, op, [&](const unsigned char (*s)[16]) {
    T r;
    std::memcpy(&r, s[src], sizeof(T));
    return r;
  });
}

// Source lanes as CUDA defines them for segments of `width` lanes; out of the segment: the own value.
template <class T>
T shfl_xor(unsigned mask, T v, int lane_mask, int width = 32) {
  const int lane = lane_id();
  int src = lane ^ lane_mask;
  if (src >= (lane / width + 1) * width) src = lane;
  return shfl_from(mask, v, src, "__shfl_xor_sync");
}
template <class T>
T shfl(unsigned mask, T v, int src_lane, int width = 32) {
  return shfl_from(mask, v, lane_id() / width * width + src_lane % width, "__shfl_sync");
}
template <class T>
T shfl_up(unsigned mask, T v, unsigned delta, int width = 32) {
  const int lane = lane_id(), src = lane - int(delta);
  return shfl_from(mask, v, src < lane / width * width ? lane : src, "__shfl_up_sync");
}
template <class T>
T shfl_down(unsigned mask, T v, unsigned delta, int width = 32) {
  const int lane = lane_id(), src = lane + int(delta);
  return shfl_from(mask, v, src >= (lane / width + 1) * width ? lane : src, "__shfl_down_sync");
}
inline unsigned ballot(unsigned mask, int pred, const char* op = "__ballot_sync") {
  return warp_exchange<int, unsigned>(mask, pred, op, [&](const unsigned char (*s)[16]) {
    unsigned r = 0;
    for (int l = 0; l < 32; ++l) {
      int p;
      std::memcpy(&p, s[l], sizeof p);
      if ((mask >> l & 1u) && p) r |= 1u << l;
    }
    return r;
  });
}
inline int any(unsigned mask, int pred) { return ballot(mask, pred, "__any_sync") != 0; }
inline int all(unsigned mask, int pred) { return ballot(mask, pred, "__all_sync") == mask; }
inline void syncwarp(unsigned mask = 0xffffffffu) { warp_arrive(mask, "__syncwarp"); }

inline unsigned char* dynamic_smem() { return my_block()->dyn.get(); }

// A thread of the block has returned from the kernel.
inline void leave() {
  Block& B = *my_block();
  Warp& w = my_warp();
  const unsigned bit = 1u << lane_id();
  std::unique_lock<std::mutex> lk(B.mu);
  if (B.launch->failed) throw Aborted{};
  --B.live;
  w.live &= ~bit;
  for (const WarpOp& o : w.ops)
    if (o.mask & bit)
      fail(B, "left the kernel while lanes " + hex(o.arrived) + " wait for it in " + o.op + " with mask " + hex(o.mask) +
                " (a lane of the mask that does not take part)");
  if (B.arrived && B.arrived == B.live) complete_block_barrier(B);
  else if (B.live && B.waiting == B.live) deadlock(B);
}

// ------------------------------------------------------------------ launch
inline std::mutex& func_attr_mu() { static std::mutex m; return m; }
inline std::map<const void*, int>& max_dynamic_smem() { static std::map<const void*, int> m; return m; }

template <class K>
cudaError_t func_set_attribute(K* kernel, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaSuccess;
  if (value < 0 || std::size_t(value) > kMaxSmem) return cudaErrorInvalidValue;
  std::lock_guard<std::mutex> lk(func_attr_mu());
  max_dynamic_smem()[reinterpret_cast<const void*>(kernel)] = value;
  return cudaSuccess;
}

[[noreturn]] inline void refuse_launch(const std::string& why) {
  throw std::runtime_error("emulated CUDA launch refused (a GPU refuses it too): " + why);
}

inline void check_launch(dim3 grid, dim3 block, std::size_t smem, const void* kernel) {
  auto dims = [](dim3 d) {
    return "(" + std::to_string(d.x) + ", " + std::to_string(d.y) + ", " + std::to_string(d.z) + ")";
  };
  if (!grid.x || !grid.y || !grid.z) refuse_launch("empty grid " + dims(grid));
  if (grid.x > 2147483647u) refuse_launch("grid " + dims(grid) + ": x over 2^31-1");
  if (grid.y > 65535u || grid.z > 65535u) refuse_launch("grid " + dims(grid) + ": y and z are limited to 65535");
  if (!block.x || !block.y || !block.z) refuse_launch("empty block " + dims(block));
  if (block.x > 1024u || block.y > 1024u || block.z > 64u)
    refuse_launch("block " + dims(block) + ": limits are x, y <= 1024, z <= 64");
  if (std::uint64_t(block.x) * block.y * block.z > 1024u)
    refuse_launch("block " + dims(block) + ": over 1024 threads");
  if (smem > kMaxSmem)
    refuse_launch(std::to_string(smem) + " bytes of dynamic shared memory, over sm_90's " + std::to_string(kMaxSmem));
  if (smem > kDefaultSmem) {
    std::lock_guard<std::mutex> lk(func_attr_mu());
    auto it = max_dynamic_smem().find(kernel);
    if (it == max_dynamic_smem().end() || std::size_t(it->second) < smem)
      refuse_launch(std::to_string(smem) + " bytes of dynamic shared memory, over 48 KiB, without "
                    "cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, >= that)");
  }
}

inline int workers() {
  const char* s = std::getenv("GK_EMU_WORKERS");
  const int v = s ? std::atoi(s) : 1;
  return v > 0 ? v : 1;
}

inline void fill_static_shared() { std::memset(gk_emu_shared_begin, kFill, std::size_t(gk_emu_shared_end - gk_emu_shared_begin)); }
inline bool static_shared_untouched() {
  for (const char* p = gk_emu_shared_begin; p != gk_emu_shared_end; ++p)
    if (static_cast<unsigned char>(*p) != kFill) return false;
  return true;
}

// The blocks of a grid in descending linear order: block k of the launch.
struct Order {
  dim3 grid;
  std::uint64_t total;
  uint3 operator()(std::uint64_t k) const {
    const std::uint64_t lin = total - 1 - k;
    return uint3{unsigned(lin % grid.x), unsigned(lin / grid.x % grid.y), unsigned(lin / (std::uint64_t(grid.x) * grid.y))};
  }
};

// Runs blocks [next, end) (taken one at a time from `next`) on one worker of nt threads.
inline void run_worker(LaunchState& L, const Order& order, std::atomic<std::uint64_t>& next, std::uint64_t end,
                       std::size_t smem, bool fill_static, const std::function<void()>& kernel) {
  const dim3 bd = block_dim();
  const int nt = int(bd.x * bd.y * bd.z);
  Block B;
  B.launch = &L;
  B.nt = nt;
  for (int i = 0; i < (nt + 31) / 32; ++i) {
    B.warps.emplace_back(new Warp);
    const int n = std::min(32, nt - 32 * i);
    B.warps.back()->exists = n == 32 ? 0xffffffffu : (1u << n) - 1;
  }
  B.dyn_bytes = smem;
  B.dyn.reset(new unsigned char[smem ? smem : 1]);
  // Next block, shared memory filled, barriers reset; false when none is left.
  auto start_block = [&] {
    const std::uint64_t k = next.fetch_add(1);
    if (k >= end || L.failed) return false;
    B.idx = order(k);
    B.live = nt;
    B.waiting = B.arrived = 0;
    for (auto& w : B.warps) {
      w->live = w->exists;
      w->waiting = 0;
      w->ops.clear();
    }
    std::memset(B.dyn.get(), kFill, smem);
    if (fill_static) fill_static_shared();
    return true;
  };
  B.done = !start_block();
  auto body = [&](unsigned t) {
    my_block() = &B;
    thread_idx() = uint3{t % bd.x, (t / bd.x) % bd.y, t / (bd.x * bd.y)};
    lane_id() = int(t % 32);
    warp_id() = int(t / 32);
    try {
      for (;;) {
        {
          std::lock_guard<std::mutex> lk(B.mu);
          if (B.done) return;
          block_idx() = B.idx;
        }
        kernel();
        leave();
        std::unique_lock<std::mutex> lk(B.mu);
        if (++B.between == nt) {  // every thread is done with the block
          B.between = 0;
          B.done = !start_block();
          ++B.between_gen;
          B.between_cv.notify_all();
        } else {
          const unsigned long long g = B.between_gen;
          wait(B, lk, B.between_cv, [&] { return B.between_gen != g; });
        }
      }
    } catch (const Aborted&) {
    } catch (const std::exception& e) {
      std::lock_guard<std::mutex> lk(B.mu);
      L.record("emulated CUDA, " + where() + ": " + e.what());
      notify_all(B);
    }
  };
  std::vector<std::thread> threads;
  threads.reserve(nt);
  for (int t = 0; t < nt; ++t) threads.emplace_back(body, unsigned(t));
  for (auto& t : threads) t.join();
}

inline void run_grid(dim3 grid, dim3 block, std::size_t smem, const std::function<void()>& kernel) {
  static std::mutex launch_mu;  // one copy of static shared memory, one launch at a time
  std::lock_guard<std::mutex> serial(launch_mu);
  grid_dim() = grid;
  block_dim() = block;
  LaunchState L;
  const Order order{grid, std::uint64_t(grid.x) * grid.y * grid.z};
  std::atomic<std::uint64_t> next{0};
  const int nw = int(std::min<std::uint64_t>(workers(), order.total));
  if (nw == 1) {
    run_worker(L, order, next, order.total, smem, true, kernel);
  } else {
    run_worker(L, order, next, 1, smem, true, kernel);
    next = 1;
    const bool concurrent = !L.failed && static_shared_untouched();
    if (!concurrent) {
      run_worker(L, order, next, order.total, smem, true, kernel);
    } else {
      std::vector<std::thread> ws;
      for (int i = 0; i < nw; ++i)
        ws.emplace_back([&] { run_worker(L, order, next, order.total, smem, false, kernel); });
      for (auto& w : ws) w.join();
      if (!L.failed && !static_shared_untouched())
        L.record("emulated CUDA: the kernel wrote __shared__ memory in a later block but not in the first, while "
                 "GK_EMU_WORKERS ran its blocks concurrently: results are invalid (run with GK_EMU_WORKERS=1)");
    }
  }
  if (L.failed) throw std::runtime_error(L.error);
}

inline dim3 to_dim3(dim3 d) { return d; }
inline dim3 to_dim3(unsigned v) { return dim3(v); }
inline dim3 to_dim3(int v) {
  if (v < 0) refuse_launch("negative dimension " + std::to_string(v));
  return dim3(unsigned(v));
}

// The configuration of one launch; operator() with the kernel's arguments checks and runs it.
template <class K>
struct Launch {
  K kernel;
  dim3 grid, block;
  std::size_t smem;
  template <class... Args>
  void operator()(Args... args) const {
    check_launch(grid, block, smem, reinterpret_cast<const void*>(kernel));
    run_grid(grid, block, smem, [&] { kernel(args...); });
  }
};

struct Config {
  dim3 grid, block;
  std::size_t smem;
  template <class K>
  Launch<K*> operator()(K* kernel) const { return {kernel, grid, block, smem}; }
};

template <class G, class B>
Config config(G grid, B block, std::size_t smem, cudaStream_t) {
  return {to_dim3(grid), to_dim3(block), smem};
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
  *v = a == cudaDevAttrMultiProcessorCount ? sm_count() : 0;
  return cudaSuccess;
}
}  // namespace emu
}  // namespace gk

#define threadIdx (::gk::emu::thread_idx())
#define blockIdx (::gk::emu::block_idx())
#define blockDim (::gk::emu::block_dim())
#define gridDim (::gk::emu::grid_dim())
#define __syncthreads() ::gk::emu::syncthreads()
#define __syncwarp(...) ::gk::emu::syncwarp(__VA_ARGS__)
#define __shfl_sync(mask, v, ...) ::gk::emu::shfl(mask, v, __VA_ARGS__)
#define __shfl_xor_sync(mask, v, ...) ::gk::emu::shfl_xor(mask, v, __VA_ARGS__)
#define __shfl_up_sync(mask, v, ...) ::gk::emu::shfl_up(mask, v, __VA_ARGS__)
#define __shfl_down_sync(mask, v, ...) ::gk::emu::shfl_down(mask, v, __VA_ARGS__)
#define __ballot_sync(mask, pred) ::gk::emu::ballot(mask, int(pred))
#define __any_sync(mask, pred) ::gk::emu::any(mask, int(pred))
#define __all_sync(mask, pred) ::gk::emu::all(mask, int(pred))
#define __expf expf
#define cudaGetLastError ::gk::emu::get_last_error
#define cudaGetErrorString ::gk::emu::get_error_string
#define cudaGetDevice ::gk::emu::get_device
#define cudaSetDevice ::gk::emu::set_device
#define cudaDeviceGetAttribute ::gk::emu::device_get_attribute
#define cudaFuncSetAttribute ::gk::emu::func_set_attribute
