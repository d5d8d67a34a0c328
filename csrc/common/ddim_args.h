// One reverse-diffusion step (DDIM / DDPM ancestral), with optional fused classifier-free guidance.
// Shared by the CPU kernel (csrc/cpu/kernels/ddim.cpp) and the CUDA kernel (csrc/cuda/ddim.cu); the
// Triton twin is genkernels/triton/ddim.py and the spec is genkernels/ops/ddim_step.py.
//
// Per element (x = sample, m = model output, z = noise), with per-sample coefficients:
//   m   = guidance ? m_u + s * (m_c - m_u) : m          (m_u = rows [0, N), m_c = rows [N, 2N))
//   x0  = A x + B m;   x0 = clamp(x0, -r, r) when clipping
//   prev = G x0 + H x + K y + S z                        (S z only when noise is given)
//   y   = x0 for DDIM with use_clipped_model_output (eps re-derived from the clipped x0), else m
// A..S come from (alpha_prod_t, alpha_prod_t_prev, eta) by step_coef below: the update of diffusers'
// DDIMScheduler.step / DDPMScheduler.step rewritten as one linear form per prediction type.
// Non-finite input: a term the reference formula does not have is left out (StepCoef's flags), never
// multiplied by 0, so each output is NaN / inf exactly where the reference's is (0 * inf = NaN). The
// Python layer passes no noise for DDIM at eta = 0 (the reference adds none).
// Domain (genkernels/ops/ddim_step.py): 0 <= a_t < 1, 0 < a_p <= 1, a_t <= a_p, a_t > 0 for epsilon
// prediction. Python floats outside it are refused; a sample whose tensor alphas are outside it gets
// NaN coefficients, hence NaN outputs, on every backend (no host synchronisation to raise).
//
// Layout: every tensor is densely packed with the batch outermost and the same order inside a sample
// (NC* or N*C), so sample n is the L contiguous elements at n * L.
//
// Arguments: sig::ddim_step below.
//   model_output has 2N rows with guidance; noise, alpha_t, alpha_prev may be absent (0).
//   alpha_t / alpha_prev: float32 or float64 tensors read at n * stride (stride 0: one shared value),
//   their dtype codes as DType (0 or 3); alpha_t_value / alpha_prev_value are used when the tensor is absent.
//   kind: 0 DDIM, 1 DDPM fixed_small variance, 2 DDPM fixed_large variance
//   prediction_type: 0 epsilon, 1 sample, 2 v_prediction; clip, use_clipped_model_output, guidance: 0/1
#pragma once
#include <cmath>
#include <limits>

#include "common/flat_args.h"

#if defined(__CUDACC__)
#define GK_HD __host__ __device__ __forceinline__
#else
#define GK_HD inline
#endif

namespace gk {
GK_ARGS_BEGIN

enum StepKind : int { kDDIM = 0, kDDPMSmall = 1, kDDPMLarge = 2 };
enum PredType : int { kEpsilon = 0, kSample = 1, kVPrediction = 2 };

namespace sig {
GK_SIGNATURE(ddim_step, "sample model_output noise alpha_t alpha_prev prev_sample pred_original_sample",
    "N L kind prediction_type clip use_clipped_model_output guidance alpha_t_dtype alpha_prev_dtype "
    "alpha_t_stride alpha_prev_stride",
    "alpha_t_value alpha_prev_value eta guidance_scale clip_range");
}  // namespace sig

struct StepArgs {
  const void *x, *m, *noise, *alpha_t, *alpha_prev;
  void *prev, *x0;
  std::int64_t N, L;
  int kind, pred, at_dtype, ap_dtype;
  bool clip, use_clipped, guidance;
  std::int64_t at_stride, ap_stride;
  double at, ap, eta, gscale, clip_range;
  explicit StepArgs(const Flat& f) {
    const Named<sig::ddim_step> a(f);
    x = a.ptr("sample"); m = a.ptr("model_output"); noise = a.ptr("noise");
    alpha_t = a.ptr("alpha_t"); alpha_prev = a.ptr("alpha_prev");
    prev = a.ptr("prev_sample"); x0 = a.ptr("pred_original_sample");
    N = a.i("N"); L = a.i("L"); kind = int(a.i("kind")); pred = int(a.i("prediction_type"));
    clip = a.i("clip") != 0; use_clipped = a.i("use_clipped_model_output") != 0; guidance = a.i("guidance") != 0;
    at_dtype = int(a.i("alpha_t_dtype")); ap_dtype = int(a.i("alpha_prev_dtype"));
    at_stride = a.i("alpha_t_stride"); ap_stride = a.i("alpha_prev_stride");
    at = a.f("alpha_t_value"); ap = a.f("alpha_prev_value"); eta = a.f("eta"); gscale = a.f("guidance_scale");
    clip_range = a.f("clip_range");
    if (kind < 0 || kind > 2) throw std::invalid_argument("ddim_step: bad kind");
    if (pred < 0 || pred > 2) throw std::invalid_argument("ddim_step: bad prediction_type");
    if ((alpha_t && at_dtype != kFloat32 && at_dtype != kFloat64) ||
        (alpha_prev && ap_dtype != kFloat32 && ap_dtype != kFloat64))
      throw std::invalid_argument("ddim_step: alpha tensors must be float32 or float64");
    const char* op = a.kernel();
    if (N < 0 || L < 0 || at_stride < 0 || ap_stride < 0) throw std::invalid_argument("ddim_step: negative size");
    const std::int64_t NL = mul(op, N, L), db = dtype_bytes(f.dtype);
    a.need("sample", NL, db);
    a.need("model_output", guidance ? mul(op, 2, NL) : NL, db);
    a.need("noise", NL, db, false);
    if (N > 0) {
      a.need("alpha_t", mul(op, N - 1, at_stride) + 1, at_dtype == kFloat64 ? 8 : 4, false);
      a.need("alpha_prev", mul(op, N - 1, ap_stride) + 1, ap_dtype == kFloat64 ? 8 : 4, false);
    }
    a.need("prev_sample", NL, db);
    a.need("pred_original_sample", NL, db);
  }
};

// An alpha of sample n: from its tensor (float32/float64) or the scalar.
GK_HD double read_alpha(const void* p, int dtype, std::int64_t stride, std::int64_t n, double scalar) {
  if (!p) return scalar;
  return dtype == kFloat64 ? static_cast<const double*>(p)[n * stride]
                           : double(static_cast<const float*>(p)[n * stride]);
}

template <class R>
struct StepCoef {
  R A, B, G, H, K, S;
  bool ax;    // x0 has the A x term (not for prediction_type sample: x0 = m)
  bool hx;    // prev has the H x term (not for DDIM epsilon prediction without use_clipped: eps = m)
  bool ky;    // prev has the K y term (DDIM only)
  bool y_x0;  // y is x0 (DDIM with use_clipped_model_output), else m
};

// The coefficients of one sample, in R (double on the host, float or double on the GPU).
template <class R>
GK_HD StepCoef<R> step_coef(int kind, int pred, bool use_clipped, bool noise, R a_t, R a_p, R eta) {
  using std::sqrt;
  const R one = R(1);
  const R b_t = one - a_t;
  const R sa = sqrt(a_t), sb = sqrt(b_t), sp = sqrt(a_p);
  R A, B, C, D;  // x0 = A x + B m, eps = C x + D m (both before clipping)
  if (pred == kEpsilon) {
    A = one / sa; B = -sb / sa; C = R(0); D = one;
  } else if (pred == kSample) {
    A = R(0); B = one; C = one / sb; D = -sa / sb;
  } else {  // v_prediction
    A = sa; B = -sb; C = sb; D = sa;
  }
  StepCoef<R> k;
  k.ax = pred != kSample;
  k.hx = kind != kDDIM || use_clipped || pred != kEpsilon;
  k.ky = kind == kDDIM;
  k.y_x0 = kind == kDDIM && use_clipped;
  if (!(a_t >= R(0) && a_t < one && a_p > R(0) && a_p <= one && a_t <= a_p && (pred != kEpsilon || a_t > R(0)))) {
    const R nan = std::numeric_limits<R>::quiet_NaN();
    k.A = k.B = k.G = k.H = k.K = k.S = nan;
    return k;
  }
  k.A = A; k.B = B;
  if (kind == kDDIM) {
    const R var = (one - a_p) / b_t * (one - a_t / a_p);
    const R std_t = eta * sqrt(var);
    const R Q = sqrt(one - a_p - std_t * std_t);  // "direction pointing to x_t"
    if (use_clipped) {                            // eps = (x - sa x0) / sb from the (clipped) x0
      k.G = sp; k.H = Q / sb; k.K = -Q * sa / sb;
    } else {
      k.G = sp; k.H = Q * C; k.K = Q * D;
    }
    k.S = noise ? std_t : R(0);
  } else {
    const R cur_alpha = a_t / a_p, cur_beta = one - cur_alpha;
    k.G = sp * cur_beta / b_t;
    k.H = sqrt(cur_alpha) * (one - a_p) / b_t;
    k.K = R(0);
    R var = kind == kDDPMSmall ? (one - a_p) / b_t * cur_beta : cur_beta;
    if (kind == kDDPMSmall && !(var >= R(1e-20))) var = var != var ? var : R(1e-20);  // clamp(min=1e-20)
    k.S = noise ? sqrt(var) : R(0);
  }
  return k;
}

// One element: x0 = clip(A x + B m), prev = G x0 + H x + K y + S z, with only the terms k has.
template <class R>
GK_HD void step_element(const StepCoef<R>& k, bool clip, bool noise, R x, R m, R z, R r, R& prev, R& x0) {
  R o = k.ax ? k.A * x + k.B * m : k.B * m;
  if (clip) o = o < -r ? -r : (o > r ? r : o);  // NaN passes through, as torch.clamp
  R p = k.hx ? k.G * o + k.H * x : k.G * o;
  if (k.ky) p += k.K * (k.y_x0 ? o : m);
  if (noise) p += k.S * z;
  prev = p;
  x0 = o;
}

GK_ARGS_END
}  // namespace gk
