"""vq_nearest: the nearest codebook row of every row of z, without an M x K distance matrix.

    indices, min_sq_dist = genkernels.vq_nearest(z, codebook)               # z [M, D], codebook [K, D]
    indices, min_sq_dist = genkernels.vq_nearest(z, codebook, cosine=True)  # l2-normalised both sides

``indices[m] = argmin_k ||z_m - e_k||^2`` (int64 [M]), computed as ``||e_k||^2 - 2 z_m . e_k`` (the
``||z_m||^2`` term is the same for every k) in tiles of M and K with a running (best, index) per row,
so neither an M x K nor an M x tile buffer is ever written to memory. Exact ties go to the lowest index
(``torch.argmin``'s rule). Rows whose scores differ by less than the rounding of the expanded form
(about ``1e-7 * (||z||^2 + ||e||^2)`` in float32) are near-ties: any of them may be returned, and the
distance reported is always the chosen code's.

``min_sq_dist[m]`` is that chosen code's squared distance recomputed directly as
``sum_d (z_md - e_kd)^2`` (not ``||z||^2 + ||e||^2 - 2 z.e``, which cancels catastrophically for nearby
points): exact to float32 rounding and never negative. It is float32 for float32/float16/bfloat16
inputs (16-bit inputs are converted exactly and accumulated in float32) and float64 for float64 inputs.

Non-finite input (every backend): a code whose score ``||e_k||^2 - 2 z_m . e_k`` is NaN (a NaN in the
code, or inf - inf from an infinite one) is never chosen, nor is one scoring +inf unless every score
is; a row with no finite score (e.g. NaN in z) gets index 0. min_sq_dist is then that code's
distance, NaN or inf as the arithmetic gives.

``cosine=True``: z and codebook rows are l2-normalised first (``F.normalize``, eps 1e-12), so the index
maximises cosine similarity and ``min_sq_dist = ||z^ - e^||^2 = 2 - 2 cos`` (for non-zero rows).

Registered as ``torch.ops.genkernels.vq_nearest`` (schema, fake implementation for ``torch.compile`` /
meta tensors) with **no autograd formula**: indices have no gradient, and a VQ layer trains through
the straight-through estimator and its losses (``genkernels.nn.VectorQuantizer``), which gather the
chosen codes in differentiable PyTorch. ``vq_nearest`` therefore runs on detached inputs and its
outputs never require grad.

Backends: ``cpu`` (csrc/cpu/kernels/vq.cpp: packed codebook, register-blocked micro-kernel, thread pool),
``triton`` (genkernels/triton/vq.py: ``tl.dot`` with float32 accumulation), ``cuda`` (csrc/cuda/vq.cu),
``reference`` (below: eager PyTorch chunked over M, so it also never holds the full M x K matrix).
Argument order of the kernels: csrc/common/vq_args.h.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

from ..backend import resolve
from ._common import Op, acc_dtype, check_tensor, launch
from ._kernels import VQNearest

Tensor = torch.Tensor
OP = "vq_nearest"
COSINE_EPS = 1e-12          # F.normalize's default
_REF_CHUNK_ELEMS = 1 << 22  # the reference's score chunk: at most 4M elements (16 MB in float32)


# ----------------------------------------------------------------------------------- reference
def reference_forward(z: Tensor, codebook: Tensor, cosine: bool = False) -> Tuple[Tensor, Tensor]:
    """Eager PyTorch in the accumulation dtype, chunked over M (at most ~4M scores alive at a time)."""
    acc = acc_dtype(z.dtype)
    M, K = z.shape[0], codebook.shape[0]
    e = codebook.to(acc)
    if cosine:
        e = F.normalize(e, dim=1, eps=COSINE_EPS)
    en = e.square().sum(1)
    idx = torch.empty(M, dtype=torch.int64, device=z.device)
    dist = torch.empty(M, dtype=acc, device=z.device)
    rows = max(1, _REF_CHUNK_ELEMS // max(K, 1))
    for m0 in range(0, M, rows):
        zc = z[m0:m0 + rows].to(acc)
        if cosine:
            zc = F.normalize(zc, dim=1, eps=COSINE_EPS)
        scores = torch.addmm(en, zc, e.t(), beta=1, alpha=-2)  # ||e||^2 - 2 z.e
        scores = scores.masked_fill(scores.isnan(), float("inf"))  # a NaN score never wins
        i = scores.argmin(1)
        idx[m0:m0 + rows] = i
        dist[m0:m0 + rows] = (zc - e[i]).square().sum(1)
    return idx, dist


# ----------------------------------------------------------------------------------- dispatch
def nearest_forward(backend: str, z: Tensor, codebook: Tensor, cosine: bool) -> Tuple[Tensor, Tensor]:
    """(indices int64 [M], min_sq_dist [M] in the accumulation dtype) on `backend`."""
    M, D = z.shape
    K = codebook.shape[0]
    acc = acc_dtype(z.dtype)
    if backend == "reference":
        return reference_forward(z, codebook, cosine)
    index = torch.empty(M, dtype=torch.int64, device=z.device)
    min_dist = torch.empty(M, dtype=acc, device=z.device)
    if M == 0:
        return index, min_dist
    if D == 0:  # every code is at distance 0: the lowest index
        return index.zero_(), min_dist.zero_()
    z, codebook, cosine, eps = z.contiguous(), codebook.contiguous(), int(bool(cosine)), COSINE_EPS
    # positional, from variables named as VQNearest's fields (tests/test_native_args.py)
    launch(backend, VQNearest(z, codebook, index, min_dist, M, K, D, cosine, eps), z.dtype)
    return index, min_dist


# ----------------------------------------------------------------------------------- registration
@torch.library.custom_op("genkernels::vq_nearest", mutates_args=())
def vq_nearest_op(z: Tensor, codebook: Tensor, cosine: bool) -> Tuple[Tensor, Tensor]:
    """(indices, min_sq_dist); no autograd (see the module docstring)."""
    check_args(z, codebook, cosine)
    return _forward(z, codebook, cosine)


def _backend(z, *_):
    """The backend the registered op runs on for these arguments."""
    return resolve(OP, z)


def _forward(z, codebook, cosine):
    """The registered op's implementation, without the argument checks."""
    return nearest_forward(_backend(z), z, codebook, cosine)


@vq_nearest_op.register_fake
def _(z, codebook, cosine):
    check_args(z, codebook, cosine)
    M = z.shape[0]
    return z.new_empty((M,), dtype=torch.int64), z.new_empty((M,), dtype=acc_dtype(z.dtype))


# ----------------------------------------------------------------------------------- public API
_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def check_args(z, codebook, cosine):
    """The registered op's arguments: raises a ValueError/TypeError naming the bad one."""
    check_tensor(OP, "z", z, dtypes=_DTYPES)
    check_tensor(OP, "codebook", codebook, dtypes=_DTYPES)
    if z.dim() != 2:
        raise ValueError(f"{OP}: `z` must be 2-D [M, D], got shape {tuple(z.shape)} "
                         "(flatten leading dims with z.reshape(-1, D))")
    if codebook.dim() != 2:
        raise ValueError(f"{OP}: `codebook` must be 2-D [K, D], got shape {tuple(codebook.shape)}")
    if codebook.shape[0] == 0:
        raise ValueError(f"{OP}: `codebook` must have at least one row (K >= 1), got shape {tuple(codebook.shape)}")
    if codebook.shape[1] != z.shape[1]:
        raise ValueError(f"{OP}: `codebook` rows have D={codebook.shape[1]} but `z` rows have D={z.shape[1]}")
    if codebook.device != z.device:
        raise ValueError(f"{OP}: `codebook` is on {codebook.device} but `z` is on {z.device}")
    if codebook.dtype != z.dtype:
        raise TypeError(f"{OP}: `codebook` has dtype {codebook.dtype} but `z` has dtype {z.dtype}; "
                        "convert one of them")
    if not isinstance(cosine, bool):
        raise TypeError(f"{OP}: `cosine` must be a bool, got {type(cosine).__name__}")


_run = Op(OP, vq_nearest_op, check_args, _forward, reference_forward, backend=_backend)


def vq_nearest(z: Tensor, codebook: Tensor, *, cosine: bool = False) -> Tuple[Tensor, Tensor]:
    """(indices int64 [M], min_sq_dist [M]) of the nearest codebook row of each row of z.

    z: [M, D], codebook: [K, D] (K >= 1), same device and dtype (float32/float16/bfloat16, float64 on
    `cpu`/`reference`). min_sq_dist is float32 (float64 for float64 inputs). No gradient flows through
    this op (inputs are detached); see the module docstring.
    """
    return _run(_detached(z), _detached(codebook), cosine)


def vq_nearest_reference(z: Tensor, codebook: Tensor, *, cosine: bool = False) -> Tuple[Tensor, Tensor]:
    """The eager-PyTorch specification of vq_nearest (chunked over M)."""
    z, codebook = _detached(z), _detached(codebook)
    check_args(z, codebook, cosine)
    return reference_forward(z, codebook, cosine)


def _detached(t):
    """t without its autograd history (anything else as given, for check_args to refuse)."""
    return t.detach() if isinstance(t, Tensor) else t
