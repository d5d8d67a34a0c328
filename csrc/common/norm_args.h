// Group/instance normalisation with optional per-channel affine, per-(n, c) FiLM and SiLU:
//   z = ((x - mean[n,g]) * rstd[n,g] * w[c] + b[c]) * s[n,c] + shift[n,c],  y = silu(z) or z
// Implementations subtract the mean before scaling: (x - mean) * (rstd*w*s) + (b*s + shift); folding
// the mean into the offset cancels two large terms when the mean is large or the variance is zero.
//   s[n,c] = 1 + scale[n,c] (group_norm_silu) or scale[n,c] (adain), 1 when scale is absent.
// Statistics and parameters are in the accumulation type (double for float64 data, float otherwise).
// Layout: x is [N, C, HW] (channels_last = 0) or [N, HW, C] (channels_last = 1), densely packed.
#pragma once
#include "common/flat_args.h"

namespace gk {
GK_ARGS_BEGIN

struct NormShape {
  std::int64_t N, C, HW, G;
  bool silu, one_plus_scale, channels_last;
};

// The shape from i = [N, C, HW, G, ...], checked: sizes >= 0, G >= 1 dividing C, N*C*HW in int64.
inline NormShape norm_shape(const char* op, const Flat& a) {
  NormShape s{a.i[0], a.i[1], a.i[2], a.i[3], a.i[4] != 0, a.i[5] != 0, a.i[6] != 0};
  if (s.N < 0 || s.C < 0 || s.HW < 0) refuse(op, "%s: negative size");
  if (s.G < 1 || s.C % s.G) refuse(op, "%s: num_groups must be >= 1 and divide C");
  mul(op, s.N, s.C, s.HW);
  return s;
}

// The arguments at the same places in forward and backward: p[2 .. 5] = weight, bias, scale, shift,
// p[6], p[7] = mean, rstd.
inline void need_params(const char* op, const Flat& a, const NormShape& s) {
  const std::int64_t ab = acc_bytes(a.dtype), NC = mul(op, s.N, s.C);
  need(a, op, 2, "weight", s.C, ab, false);
  need(a, op, 3, "bias", s.C, ab, false);
  need(a, op, 4, "scale", NC, ab, false);
  need(a, op, 5, "shift", NC, ab, false);
  need(a, op, 6, "mean", mul(op, s.N, s.G), ab);
  need(a, op, 7, "rstd", mul(op, s.N, s.G), ab);
}

// forward: p = [x, y, weight, bias, scale, shift, mean, rstd]; i = [N, C, HW, G, silu, one_plus_scale,
//          channels_last]; f = [eps].  mean/rstd: [N, G] outputs.
struct NormFwdArgs {
  const void* x; void* y;
  const void *w, *b, *scale, *shift;
  void *mean, *rstd;
  NormShape s;
  double eps;
  explicit NormFwdArgs(const Flat& a) {
    expect(a, "group_norm_fwd", 8, 7, 1);
    x = a.ptr<void>(0); y = a.ptr<void>(1); w = a.ptr<void>(2); b = a.ptr<void>(3);
    scale = a.ptr<void>(4); shift = a.ptr<void>(5); mean = a.ptr<void>(6); rstd = a.ptr<void>(7);
    s = norm_shape("group_norm_fwd", a);
    eps = a.f[0];
    const char* op = "group_norm_fwd";
    const std::int64_t NCHW = mul(op, s.N, s.C, s.HW), db = dtype_bytes(a.dtype);
    need(a, op, 0, "x", NCHW, db);
    need(a, op, 1, "y", NCHW, db);
    need_params(op, a, s);
  }
};

// backward: p = [dy, x, weight, bias, scale, shift, mean, rstd, dx, sum_dz, sum_dz_xhat]; i as forward.
//   dz = dy * silu'(z) (or dy), sum_dz[n,c] = sum_hw dz, sum_dz_xhat[n,c] = sum_hw dz * xhat  ([N, C], acc type)
//   dx = rstd * (dz*w*s - mean_g(dz*w*s) - xhat * mean_g(dz*w*s*xhat))
// dy has x's layout. Parameter gradients are formed from the two sums by the Python layer.
struct NormBwdArgs {
  const void *dy, *x;
  const void *w, *b, *scale, *shift, *mean, *rstd;
  void *dx, *sum_dz, *sum_dz_xhat;
  NormShape s;
  explicit NormBwdArgs(const Flat& a) {
    expect(a, "group_norm_bwd", 11, 7, 0);
    dy = a.ptr<void>(0); x = a.ptr<void>(1); w = a.ptr<void>(2); b = a.ptr<void>(3);
    scale = a.ptr<void>(4); shift = a.ptr<void>(5); mean = a.ptr<void>(6); rstd = a.ptr<void>(7);
    dx = a.ptr<void>(8); sum_dz = a.ptr<void>(9); sum_dz_xhat = a.ptr<void>(10);
    s = norm_shape("group_norm_bwd", a);
    const char* op = "group_norm_bwd";
    const std::int64_t NCHW = mul(op, s.N, s.C, s.HW), db = dtype_bytes(a.dtype), ab = acc_bytes(a.dtype);
    need(a, op, 0, "dy", NCHW, db);
    need(a, op, 1, "x", NCHW, db);
    need_params(op, a, s);
    need(a, op, 8, "dx", NCHW, db);
    need(a, op, 9, "sum_dz", mul(op, s.N, s.C), ab);
    need(a, op, 10, "sum_dz_xhat", mul(op, s.N, s.C), ab);
  }
};

GK_ARGS_END
}  // namespace gk
