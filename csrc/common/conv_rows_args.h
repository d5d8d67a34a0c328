// Convolution (a linear layer is the 1x1 case) for few output rows: the weight is streamed once from
// memory and each of its cache-resident pieces serves every output row, where a GEMM library's packing
// and blocking cost more than the arithmetic (the UNet's lowest levels: 2x2 to 4x4 maps, batch 2).
// CPU only (csrc/cpu/kernels/conv_rows.cpp); the caller is genkernels/models/onednn.py.
//
//   y[b, oh, ow, n] = bias[n] + sum over kh, kw, c of
//                     x[b, oh * stride_h - pad_h + kh * dil_h, ow * stride_w - pad_w + kw * dil_w, c] * w[n, kh, kw, c]
// Terms whose input position lies outside the H x W map (zero padding) are left out, never multiplied
// by 0 (a non-finite weight does not reach an output through padding, as in oneDNN's convolution).
//
// Arguments: sig::conv_rows below. Float32 only. Every tensor dense:
//   x: [B, H, W, C] (channels_last); w: [N, KH, KW, C] (the channels_last layout of an [N, C, KH, KW]
//   weight; a Linear's [N, C] weight with KH = KW = 1); bias: [N] or absent; y: [B, Ho, Wo, N].
//   Sizes >= 0; KH, KW, strides and dilations >= 1; padding >= 0. Ho and Wo are the caller's: any
//   values are memory-safe (input positions are checked against the map).
#pragma once
#include "common/flat_args.h"

namespace gk {
GK_ARGS_BEGIN

namespace sig {
GK_SIGNATURE(conv_rows, "x w bias y",
    "B H W C N KH KW Ho Wo stride_h stride_w pad_h pad_w dil_h dil_w",
    "");
}  // namespace sig

struct ConvRowsArgs {
  const float *x, *w, *bias;
  float* y;
  std::int64_t B, H, W, C, N, KH, KW, Ho, Wo, sh, sw, ph, pw, dh, dw;
  explicit ConvRowsArgs(const Flat& f) {
    const Named<sig::conv_rows> a(f);
    const char* op = a.kernel();
    if (f.dtype != kFloat32) refuse(op, "%s: float32 only (dtype code %lld)", f.dtype);
    x = a.ptr<const float>("x"); w = a.ptr<const float>("w"); bias = a.ptr<const float>("bias");
    y = a.ptr<float>("y");
    B = a.i("B"); H = a.i("H"); W = a.i("W"); C = a.i("C"); N = a.i("N"); KH = a.i("KH"); KW = a.i("KW");
    Ho = a.i("Ho"); Wo = a.i("Wo"); sh = a.i("stride_h"); sw = a.i("stride_w");
    ph = a.i("pad_h"); pw = a.i("pad_w"); dh = a.i("dil_h"); dw = a.i("dil_w");
    if (B < 0 || H < 0 || W < 0 || C < 0 || N < 0 || Ho < 0 || Wo < 0 || ph < 0 || pw < 0)
      refuse(op, "%s: sizes and padding must be >= 0");
    if (KH < 1 || KW < 1 || sh < 1 || sw < 1 || dh < 1 || dw < 1)
      refuse(op, "%s: kernel size, stride and dilation must be >= 1");
    // positions are computed in int64: keep oh * stride + kh * dil well inside it
    const std::int64_t big = std::int64_t(1) << 40;
    if (Ho > big || Wo > big || sh > big || sw > big || dh > big || dw > big || ph > big || pw > big ||
        KH > big || KW > big)
      refuse(op, "%s: geometry out of range");
    a.need("x", mul(op, mul(op, B, H), mul(op, W, C)), 4);
    a.need("w", mul(op, mul(op, N, KH), mul(op, KW, C)), 4);
    a.need("bias", N, 4, false);
    a.need("y", mul(op, mul(op, B, Ho), mul(op, Wo, N)), 4);
  }
};

GK_ARGS_END
}  // namespace gk
