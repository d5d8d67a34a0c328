// CPU DDIM / DDPM step with fused classifier-free guidance: one pass over the inputs, one write of
// each output. Semantics and argument order: csrc/common/ddim_args.h.
//
// Per-sample coefficients are formed once in double; the element loop is branch-free float math
// (double for float64 data) that the compiler vectorises, with 16-bit storage converted on load/store.
// Work is split into chunks that never cross a sample, claimed dynamically by the thread pool.
#include <algorithm>
#include <vector>

#include "common/ddim_args.h"
#include "cpu/parallel.h"
#include "cpu/vec_math.h"

namespace gk {
namespace GK_ISA {
namespace {

template <class A>
struct Coef {
  A A_, B_, G_, H_, K_, S_;
};

template <class T, bool GUIDE, bool CLIP, bool NOISE>
void step_range(const T* __restrict x, const T* __restrict mu, const T* __restrict mc, const T* __restrict z,
                T* __restrict prev, T* __restrict x0o, std::int64_t n, const Coef<acc_t<T>>& k,
                acc_t<T> s, acc_t<T> r) {
  using A = acc_t<T>;
  const A cA = k.A_, cB = k.B_, cG = k.G_, cH = k.H_, cK = k.K_, cS = k.S_;
  const A lo = -r;
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) {
    const A xv = to_acc(x[i]);
    A m;
    if (GUIDE) {
      const A u = to_acc(mu[i]);
      m = u + s * (to_acc(mc[i]) - u);
    } else {
      m = to_acc(mu[i]);
    }
    A x0 = cA * xv + cB * m;
    if (CLIP) x0 = x0 < lo ? lo : (x0 > r ? r : x0);  // NaN passes through, as torch.clamp
    A p = cG * x0 + cH * xv + cK * m;
    if (NOISE) p += cS * to_acc(z[i]);
    prev[i] = from_acc<T>(p);
    x0o[i] = from_acc<T>(x0);
  }
}

template <class T>
using RangeFn = void (*)(const T*, const T*, const T*, const T*, T*, T*, std::int64_t, const Coef<acc_t<T>>&,
                         acc_t<T>, acc_t<T>);

template <class T, bool G, bool C>
RangeFn<T> pick3(bool noise) {
  return noise ? &step_range<T, G, C, true> : &step_range<T, G, C, false>;
}
template <class T, bool G>
RangeFn<T> pick2(bool clip, bool noise) {
  return clip ? pick3<T, G, true>(noise) : pick3<T, G, false>(noise);
}

template <class T>
void run(const StepArgs& p, int threads) {
  using A = acc_t<T>;
  const std::int64_t N = p.N, L = p.L;
  if (N <= 0 || L <= 0) return;
  const bool noise = p.noise != nullptr;
  std::vector<Coef<A>> coef(N);
  for (std::int64_t n = 0; n < N; ++n) {
    const double at = read_alpha(p.alpha_t, p.at_dtype, p.at_stride, n, p.at);
    const double ap = read_alpha(p.alpha_prev, p.ap_dtype, p.ap_stride, n, p.ap);
    StepCoef<double> k = step_coef<double>(p.kind, p.pred, p.use_clipped, noise, at, ap, p.eta);
    coef[n] = {A(k.A), A(k.B), A(k.G), A(k.H), A(k.K), A(k.S)};
  }
  const T* x = static_cast<const T*>(p.x);
  const T* m = static_cast<const T*>(p.m);
  const T* z = static_cast<const T*>(p.noise);
  T* prev = static_cast<T*>(p.prev);
  T* x0 = static_cast<T*>(p.x0);
  RangeFn<T> fn = p.guidance ? pick2<T, true>(p.clip, noise) : pick2<T, false>(p.clip, noise);
  const A s = A(p.gscale), r = A(p.clip_range);

  // Chunks of 4K..64K elements (a multiple of 64), about 4 per thread; small steps run inline.
  const std::int64_t total = N * L;
  if (total < (std::int64_t(1) << 15)) threads = 1;
  std::int64_t chunk = (total + std::int64_t(threads) * 4 - 1) / (std::int64_t(threads) * 4);
  chunk = std::min<std::int64_t>(std::max<std::int64_t>(chunk, 4096), 65536);
  chunk = (chunk + 63) / 64 * 64;
  const std::int64_t per = (L + chunk - 1) / chunk;
  parallel_for(N * per, threads, [&](std::int64_t t) {
    const std::int64_t n = t / per, i0 = (t % per) * chunk, len = std::min(chunk, L - i0);
    const std::int64_t off = n * L + i0;
    const T* mu = m + off;
    const T* mc = p.guidance ? m + (N + n) * L + i0 : nullptr;
    fn(x + off, mu, mc, noise ? z + off : nullptr, prev + off, x0 + off, len, coef[n], s, r);
  });
}

}  // namespace

void ddim_step(const Flat& a, int threads) {
  StepArgs p(a);
  switch (a.dtype) {
    case kFloat32: run<float>(p, threads); break;
    case kFloat64: run<double>(p, threads); break;
    case kFloat16: run<half_t>(p, threads); break;
    case kBFloat16: run<bf16_t>(p, threads); break;
    default: throw std::invalid_argument("ddim_step: unsupported dtype code");
  }
}

}  // namespace GK_ISA
}  // namespace gk
