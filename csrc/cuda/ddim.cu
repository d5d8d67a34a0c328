// CUDA DDIM / DDPM step with fused classifier-free guidance: one launch, one read of each input,
// one write of each output. Semantics, coefficient algebra and argument order: csrc/common/ddim_args.h.
//
// Grid: (x: chunks of one sample, y: samples). Each thread forms its sample's coefficients from the
// scalar alphas or the alpha tensors (a few flops, no host sync), then streams 16-byte vectors
// (4 float / 8 half / 2 double) when every pointer is 16-byte aligned and L is a multiple of the
// vector width, else single elements. Arithmetic in float (double for float64 data).
#include <algorithm>

#include "common/ddim_args.h"
#include "cuda/common.cuh"

namespace gk {
namespace {
using namespace cu;

struct Params {
  const void *x, *m, *z, *at, *ap;
  void *prev, *x0;
  long long N, L, at_stride, ap_stride;
  int kind, pred, at_dtype, ap_dtype;
  bool clip, use_clipped, guide;
  double at_v, ap_v, eta, gscale, r;
};

constexpr int kThreads = 256;
constexpr int kVecsPerThread = 4;

template <class T, int V>
__global__ void __launch_bounds__(kThreads) ddim_step_kernel(Params p) {
  using A = acc_t<T>;
  using VT = Vec<T, V>;
  const bool noise = p.z != nullptr;
  const long long nvec = p.L / V;
  const A s = A(p.gscale), r = A(p.r);
  for (long long n = blockIdx.y; n < p.N; n += gridDim.y) {
    const A at = A(read_alpha(p.at, p.at_dtype, p.at_stride, n, p.at_v));
    const A ap = A(read_alpha(p.ap, p.ap_dtype, p.ap_stride, n, p.ap_v));
    const StepCoef<A> k = step_coef<A>(p.kind, p.pred, p.use_clipped, noise, at, ap, A(p.eta));
    const VT* x = reinterpret_cast<const VT*>(static_cast<const T*>(p.x) + n * p.L);
    const VT* mu = reinterpret_cast<const VT*>(static_cast<const T*>(p.m) + n * p.L);
    const VT* mc = reinterpret_cast<const VT*>(static_cast<const T*>(p.m) + (p.N + n) * p.L);
    const VT* z = reinterpret_cast<const VT*>(static_cast<const T*>(p.z) + n * p.L);
    VT* prev = reinterpret_cast<VT*>(static_cast<T*>(p.prev) + n * p.L);
    VT* x0o = reinterpret_cast<VT*>(static_cast<T*>(p.x0) + n * p.L);
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < nvec;
         i += (long long)gridDim.x * blockDim.x) {
      const VT xv = x[i], uv = mu[i];
      VT cv, zv, pv, ov;
      if (p.guide) cv = mc[i];
      if (noise) zv = z[i];
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const A xe = to_acc(xv.v[j]);
        A m = to_acc(uv.v[j]);
        if (p.guide) m = m + s * (to_acc(cv.v[j]) - m);
        A pr, x0;
        step_element<A>(k, p.clip, noise, xe, m, noise ? to_acc(zv.v[j]) : A(0), r, pr, x0);
        pv.v[j] = from_acc<T>(pr);
        ov.v[j] = from_acc<T>(x0);
      }
      prev[i] = pv;
      x0o[i] = ov;
    }
  }
}

template <class T>
void launch(const StepArgs& a, cudaStream_t stream) {
  Params p{a.x, a.m, a.noise, a.alpha_t, a.alpha_prev, a.prev, a.x0, a.N, a.L, a.at_stride, a.ap_stride,
           a.kind, a.pred, a.at_dtype, a.ap_dtype, a.clip, a.use_clipped, a.guidance,
           a.at, a.ap, a.eta, a.gscale, a.clip_range};
  constexpr int V = 16 / sizeof(T);
  auto aligned = [](const void* q) { return (reinterpret_cast<std::uintptr_t>(q) & 15u) == 0; };
  const bool vec = a.L % V == 0 && aligned(a.x) && aligned(a.m) && aligned(a.prev) && aligned(a.x0) &&
                   (a.noise == nullptr || aligned(a.noise));
  const int v = vec ? V : 1;
  const long long nvec = a.L / v;
  const long long per_block = (long long)kThreads * kVecsPerThread;
  dim3 grid((unsigned)std::min<long long>(std::max<long long>((nvec + per_block - 1) / per_block, 1), 65535),
            (unsigned)std::min<long long>(a.N, 65535));
  if (vec)
    GK_LAUNCH(grid, kThreads, 0, stream, ddim_step_kernel<T, V>)(p);
  else
    GK_LAUNCH(grid, kThreads, 0, stream, ddim_step_kernel<T, 1>)(p);
}

}  // namespace

void cuda_ddim_step(const Flat& f, int device, std::uintptr_t stream) {
  StepArgs a(f);
  if (a.N <= 0 || a.L <= 0) return;
  if (f.size_query) return;  // no scratch
  DeviceGuard guard(device);
  by_dtype(f.dtype, "ddim_step", [&](auto t) { launch<decltype(t)>(a, as_stream(stream)); });
  check(cudaGetLastError(), "ddim_step launch");
}

}  // namespace gk
