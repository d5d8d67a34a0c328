// Vector quantisation: nearest codebook row of every row of z, without an M x K distance matrix.
// Shared by the CPU kernel (csrc/cpu/kernels/vq.cpp) and the CUDA kernel (csrc/cuda/vq.cu); the Triton
// twin is genkernels/triton/vq.py and the spec (eager reference) is genkernels/ops/vq_nearest.py.
//
//   cosine = 0:  zh = z,                       eh_k = e_k
//   cosine = 1:  zh = z / max(||z||, eps),     eh_k = e_k / max(||e_k||, eps)      (F.normalize)
//   index[m]    = argmin_k  ||eh_k||^2 - 2 zh_m . eh_k      (||zh_m||^2 is constant per row: omitted)
//                 lowest k among equal computed values (torch.argmin's rule); a row whose scores are all
//                 NaN (NaN in z) gets index 0, like argmin over a row of NaNs.
//   min_dist[m] = sum_d (zh_m,d - eh_index[m],d)^2, recomputed directly for the winner (no cancellation,
//                 never negative), in the accumulation type.
// Arithmetic: float for float32/float16/bfloat16 data (16-bit values are converted exactly), double for
// float64. Kernels tile over M and K and keep a running (best, index) per row: no M x K (or M x tile)
// buffer is written to memory; extra memory is O(K * D) (a packed/normalised codebook) plus O(M).
//
// Arguments: sig::vq_nearest below.
//   z: [M, D], codebook: [K, D] (same dtype, contiguous); index: int64 [M]; min_dist: acc type [M]
//   K >= 1; M, D >= 0; eps: the cosine normalisation floor (F.normalize's 1e-12)
#pragma once
#include "common/flat_args.h"

namespace gk {
GK_ARGS_BEGIN

namespace sig {
GK_SIGNATURE(vq_nearest, "z codebook index min_dist",
    "M K D cosine",
    "eps");
}  // namespace sig

struct VQArgs {
  const void* z;
  const void* codebook;
  std::int64_t* index;
  void* min_dist;
  std::int64_t M, K, D;
  bool cosine;
  double eps;
  explicit VQArgs(const Flat& f) {
    const Named<sig::vq_nearest> a(f);
    z = a.ptr("z"); codebook = a.ptr("codebook");
    index = a.ptr<std::int64_t>("index"); min_dist = a.ptr("min_dist");
    M = a.i("M"); K = a.i("K"); D = a.i("D"); cosine = a.i("cosine") != 0;
    eps = a.f("eps");
    if (M < 0 || K < 1 || D < 0)
      throw std::invalid_argument("vq_nearest: need M >= 0, K >= 1, D >= 0");
    const char* op = a.kernel();
    const std::int64_t db = dtype_bytes(f.dtype);
    a.need("z", mul(op, M, D), db);
    a.need("codebook", mul(op, K, D), db);
    a.need("index", M, 8);
    a.need("min_dist", M, acc_bytes(f.dtype));
  }
};

GK_ARGS_END
}  // namespace gk
