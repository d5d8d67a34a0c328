// Group/instance normalisation with optional per-channel affine, per-(n, c) FiLM and SiLU:
//   z = ((x - mean[n,g]) * rstd[n,g] * w[c] + b[c]) * s[n,c] + shift[n,c],  y = silu(z) or z
// Implementations subtract the mean before scaling: (x - mean) * (rstd*w*s) + (b*s + shift); folding
// the mean into the offset cancels two large terms when the mean is large or the variance is zero.
//   s[n,c] = 1 + scale[n,c] (group_norm_silu) or scale[n,c] (adain), 1 when scale is absent.
// Statistics and parameters are in the accumulation type (double for float64 data, float otherwise).
// Layout: x is [N, C, HW] (channels_last = 0) or [N, HW, C] (channels_last = 1), densely packed.
// Arguments: sig::group_norm_fwd / sig::group_norm_bwd below (silu, one_plus_scale, channels_last: 0/1).
#pragma once
#include "common/flat_args.h"

namespace gk {
GK_ARGS_BEGIN

namespace sig {
GK_SIGNATURE(group_norm_fwd, "x y weight bias scale shift mean rstd",
    "N C HW G silu one_plus_scale channels_last",
    "eps");
GK_SIGNATURE(group_norm_bwd, "dy x weight bias scale shift mean rstd dx sum_dz sum_dz_xhat",
    "N C HW G silu one_plus_scale channels_last",
    "");
}  // namespace sig

struct NormShape {
  std::int64_t N, C, HW, G;
  bool silu, one_plus_scale, channels_last;
};

// The shape, checked: sizes >= 0, G >= 1 dividing C, N*C*HW in int64.
template <class S>
NormShape norm_shape(const Named<S>& a) {
  NormShape s{a.i("N"), a.i("C"), a.i("HW"), a.i("G"), a.i("silu") != 0, a.i("one_plus_scale") != 0,
              a.i("channels_last") != 0};
  if (s.N < 0 || s.C < 0 || s.HW < 0) refuse(S::kernel, "%s: negative size");
  if (s.G < 1 || s.C % s.G) refuse(S::kernel, "%s: num_groups must be >= 1 and divide C");
  mul(S::kernel, s.N, s.C, s.HW);
  return s;
}

// The arguments forward and backward share: the parameters and the statistics.
template <class S>
void need_params(const Named<S>& a, const NormShape& s) {
  const char* op = S::kernel;
  const std::int64_t ab = acc_bytes(a.a.dtype), NC = mul(op, s.N, s.C);
  a.need("weight", s.C, ab, false);
  a.need("bias", s.C, ab, false);
  a.need("scale", NC, ab, false);
  a.need("shift", NC, ab, false);
  a.need("mean", mul(op, s.N, s.G), ab);
  a.need("rstd", mul(op, s.N, s.G), ab);
}

// forward: mean/rstd are [N, G] outputs.
struct NormFwdArgs {
  const void* x; void* y;
  const void *w, *b, *scale, *shift;
  void *mean, *rstd;
  NormShape s;
  double eps;
  explicit NormFwdArgs(const Flat& f) {
    const Named<sig::group_norm_fwd> a(f);
    x = a.ptr("x"); y = a.ptr("y"); w = a.ptr("weight"); b = a.ptr("bias");
    scale = a.ptr("scale"); shift = a.ptr("shift"); mean = a.ptr("mean"); rstd = a.ptr("rstd");
    s = norm_shape(a);
    eps = a.f("eps");
    const std::int64_t NCHW = mul(a.kernel(), s.N, s.C, s.HW), db = dtype_bytes(f.dtype);
    a.need("x", NCHW, db);
    a.need("y", NCHW, db);
    need_params(a, s);
  }
};

// backward: the arguments of forward (dy has x's layout), and
//   dz = dy * silu'(z) (or dy), sum_dz[n,c] = sum_hw dz, sum_dz_xhat[n,c] = sum_hw dz * xhat  ([N, C], acc type)
//   dx = rstd * (dz*w*s - mean_g(dz*w*s) - xhat * mean_g(dz*w*s*xhat))
// Parameter gradients are formed from the two sums by the Python layer.
struct NormBwdArgs {
  const void *dy, *x;
  const void *w, *b, *scale, *shift, *mean, *rstd;
  void *dx, *sum_dz, *sum_dz_xhat;
  NormShape s;
  explicit NormBwdArgs(const Flat& f) {
    const Named<sig::group_norm_bwd> a(f);
    dy = a.ptr("dy"); x = a.ptr("x"); w = a.ptr("weight"); b = a.ptr("bias");
    scale = a.ptr("scale"); shift = a.ptr("shift"); mean = a.ptr("mean"); rstd = a.ptr("rstd");
    dx = a.ptr("dx"); sum_dz = a.ptr("sum_dz"); sum_dz_xhat = a.ptr("sum_dz_xhat");
    s = norm_shape(a);
    const char* op = a.kernel();
    const std::int64_t NCHW = mul(op, s.N, s.C, s.HW), db = dtype_bytes(f.dtype), ab = acc_bytes(f.dtype);
    a.need("dy", NCHW, db);
    a.need("x", NCHW, db);
    need_params(a, s);
    a.need("dx", NCHW, db);
    a.need("sum_dz", mul(op, s.N, s.C), ab);
    a.need("sum_dz_xhat", mul(op, s.N, s.C), ab);
  }
};

GK_ARGS_END
}  // namespace gk
