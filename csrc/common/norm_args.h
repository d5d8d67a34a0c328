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

struct NormShape {
  std::int64_t N, C, HW, G;
  bool silu, one_plus_scale, channels_last;
};

// forward: p = [x, y, weight, bias, scale, shift, mean, rstd]; i = [N, C, HW, G, silu, one_plus_scale,
//          channels_last]; f = [eps].  mean/rstd: [N, G] outputs.
struct NormFwdArgs {
  const void* x; void* y;
  const void *w, *b, *scale, *shift;
  void *mean, *rstd;
  NormShape s;
  double eps;
  explicit NormFwdArgs(const Flat& a) {
    a.expect("group_norm_fwd", 8, 7, 1);
    x = a.ptr<void>(0); y = a.ptr<void>(1); w = a.ptr<void>(2); b = a.ptr<void>(3);
    scale = a.ptr<void>(4); shift = a.ptr<void>(5); mean = a.ptr<void>(6); rstd = a.ptr<void>(7);
    s = {a.i[0], a.i[1], a.i[2], a.i[3], a.i[4] != 0, a.i[5] != 0, a.i[6] != 0};
    eps = a.f[0];
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
    a.expect("group_norm_bwd", 11, 7, 0);
    dy = a.ptr<void>(0); x = a.ptr<void>(1); w = a.ptr<void>(2); b = a.ptr<void>(3);
    scale = a.ptr<void>(4); shift = a.ptr<void>(5); mean = a.ptr<void>(6); rstd = a.ptr<void>(7);
    dx = a.ptr<void>(8); sum_dz = a.ptr<void>(9); sum_dz_xhat = a.ptr<void>(10);
    s = {a.i[0], a.i[1], a.i[2], a.i[3], a.i[4] != 0, a.i[5] != 0, a.i[6] != 0};
  }
};

}  // namespace gk
