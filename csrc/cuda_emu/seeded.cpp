// Small CUDA-style kernels with seeded bugs, compiled into genkernels._C_cuemu only, for
// tests/test_cuda_emu_strict.py: each bug is one the strict emulator (emu.h) must make loud, next to
// the correct variant that must pass. Exported as _C_cuemu.seeded(case, out, in, ints).
#include <string>
#include <vector>

#include "cuda/common.cuh"
#include "cuda_emu/seeded.h"

namespace gk {
namespace {

constexpr int kThreads = 64;

// out[block] = sum of a shared array of kThreads floats of which the block writes the first `written`.
__global__ void shared_sum_kernel(float* out, int written) {
  __shared__ float s[kThreads];
  if (int(threadIdx.x) < written) s[threadIdx.x] = float(threadIdx.x);
  __syncthreads();
  if (threadIdx.x == 0) {
    float t = 0.f;
    for (int i = 0; i < kThreads; ++i) t += s[i];
    out[blockIdx.x] = t;
  }
}

__global__ void dynamic_sum_kernel(float* out, int written) {
  GK_DYNAMIC_SHARED(float, s);
  if (int(threadIdx.x) < written) s[threadIdx.x] = float(threadIdx.x);
  __syncthreads();
  if (threadIdx.x == 0) {
    float t = 0.f;
    for (int i = 0; i < int(blockDim.x); ++i) t += s[i];
    out[blockIdx.x] = t;
  }
}

__global__ void noop_kernel(float* out) {
  if (threadIdx.x == 0 && blockIdx.x == 0 && blockIdx.y == 0 && blockIdx.z == 0) out[0] = 1.f;
}

// Warp-synchronous ops; `variant` selects a correct use or a seeded misuse. out[lane] = result.
__global__ void warp_kernel(float* out, int variant) {
  const int lane = int(threadIdx.x & 31);
  float v = float(lane);
  switch (variant) {
    case 0:  // full warp, full mask
      for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      break;
    case 1:  // half the warp, its own mask: correct divergent use
      if (lane < 16)
        for (int o = 8; o; o >>= 1) v += __shfl_xor_sync(0x0000ffffu, v, o);
      break;
    case 2:  // BUG: every lane calls with a mask of lanes 0-15
      v += __shfl_xor_sync(0x0000ffffu, v, 1);
      break;
    case 3:  // BUG: full mask, but only lanes 0-15 take part
      if (lane < 16) v += __shfl_xor_sync(0xffffffffu, v, 1);
      break;
    case 4:  // BUG: lanes 0-15 read lanes 16-31, outside their mask
      if (lane < 16) v += __shfl_xor_sync(0x0000ffffu, v, 16);
      break;
    case 5:  // ballot of the even lanes
      v = float(__ballot_sync(0xffffffffu, lane % 2 == 0) == 0x55555555u);
      break;
    case 6:  // BUG: lanes 0-15 in a full-mask shuffle while lanes 16-31 wait at __syncthreads
      if (lane < 16) v += __shfl_xor_sync(0xffffffffu, v, 1);
      else __syncthreads();
      break;
    case 7:  // each half of the warp with its own mask, at the same time: correct divergent use
      if (lane < 16) v += __shfl_xor_sync(0x0000ffffu, v, 1);
      else v += __shfl_xor_sync(0xffff0000u, v, 2);
      break;
    case 8:  // BUG: the halves' masks overlap (lanes 8-15 are in both)
      if (lane < 16) v += __shfl_xor_sync(0x0000ffffu, v, 1);
      else v += __shfl_xor_sync(0xffffff00u, v, 2);
      break;
    default:
      break;
  }
  out[threadIdx.x] = v;
}

// out[i] = sum of the float4 at in + offset + 4 i: a misaligned float4 load when offset % 4 != 0.
__global__ void float4_kernel(float* out, const float* in, int offset) {
  const float4 q = *reinterpret_cast<const float4*>(in + offset + 4 * threadIdx.x);
  out[threadIdx.x] = q.x + q.y + q.z + q.w;
}

// BUG: block b reads block b-1's output (no order between blocks on a GPU). out[b] = b + 1 when blocks
// run in ascending order.
__global__ void chain_kernel(float* out) {
  if (threadIdx.x == 0) out[blockIdx.x] = (blockIdx.x == 0 ? 0.f : out[blockIdx.x - 1]) + 1.f;
}

// Correct: out[b * blockDim + t] = 2 in[...] + b (no shared memory, any block order).
__global__ void scale_kernel(float* out, const float* in) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  out[i] = 2.f * in[i] + float(blockIdx.x);
}

}  // namespace

void seeded_kernel(const std::string& name, std::uintptr_t out_p, std::uintptr_t in_p, const std::vector<long long>& n) {
  float* out = reinterpret_cast<float*>(out_p);
  const float* in = reinterpret_cast<const float*>(in_p);
  auto arg = [&](std::size_t k) {
    if (k >= n.size()) throw std::invalid_argument("seeded " + name + ": missing integer argument " + std::to_string(k));
    return n[k];
  };
  if (name == "shared_sum") {  // n: blocks, written
    GK_LAUNCH(unsigned(arg(0)), kThreads, 0, nullptr, shared_sum_kernel)(out, int(arg(1)));
  } else if (name == "dynamic_sum") {  // n: blocks, threads, written
    GK_LAUNCH(unsigned(arg(0)), unsigned(arg(1)), std::size_t(arg(1)) * sizeof(float), nullptr, dynamic_sum_kernel)(out, int(arg(2)));
  } else if (name == "launch") {  // n: grid xyz, block xyz, dynamic smem bytes, opt-in bytes (-1: none)
    if (arg(7) >= 0)
      cu::check(cudaFuncSetAttribute(noop_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(arg(7))),
                "cudaFuncSetAttribute");
    const dim3 grid(unsigned(arg(0)), unsigned(arg(1)), unsigned(arg(2))), block(unsigned(arg(3)), unsigned(arg(4)), unsigned(arg(5)));
    // the emulator's own launch checks, not GK_LAUNCH's (csrc/cuda/launch_limits.cuh refuses first)
    ::gk::emu::config(grid, block, std::size_t(arg(6)), nullptr)(noop_kernel)(out);
  } else if (name == "warp") {  // n: variant
    GK_LAUNCH(1, 32, 0, nullptr, warp_kernel)(out, int(arg(0)));
  } else if (name == "float4") {  // n: threads, offset (floats)
    GK_LAUNCH(1, unsigned(arg(0)), 0, nullptr, float4_kernel)(out, in, int(arg(1)));
  } else if (name == "chain") {  // n: blocks
    GK_LAUNCH(unsigned(arg(0)), 32, 0, nullptr, chain_kernel)(out);
  } else if (name == "scale") {  // n: blocks, threads
    GK_LAUNCH(unsigned(arg(0)), unsigned(arg(1)), 0, nullptr, scale_kernel)(out, in);
  } else {
    throw std::invalid_argument("seeded: unknown case " + name);
  }
}

}  // namespace gk
