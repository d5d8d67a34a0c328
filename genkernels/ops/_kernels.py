"""The arguments of every compiled kernel, by name: one NamedTuple per kernel, fields in the kernel's
order (tensors, then integers, then floats). The native signatures are declared once, in
csrc/common/*_args.h (`sig::<kernel>`), and exported by each module as ``kernel_args()``;
genkernels._native.call checks a NamedTuple's fields against them before its first call, so a field
renamed, dropped or moved on either side is an error, never a shifted argument. The Triton entry
points (genkernels/triton/<FAMILY>.py) take the same values in the same order.

Tensors may be None (absent); integers are Python ints (flags 0/1); semantics: the headers.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

from torch import Tensor


def _kernel_args(name: str, family: str, kernel: str, fields, cpu_only: bool = False):
    """A NamedTuple class `name` of `fields` ([(name, type)]) for kernel `family`.`kernel` (`cpu_only`: in
    genkernels._C alone, with no CUDA or Triton twin)."""
    args = NamedTuple(name, fields)
    args.FAMILY, args.KERNEL, args.CPU_ONLY = family, kernel, cpu_only
    args.__module__ = __name__
    return args


def _tensors(*names):
    return [(n, Optional[Tensor]) for n in names]


# group_norm_fwd / group_norm_bwd: the same parameters, statistics and integers
_NORM_PARAMS = _tensors("weight", "bias", "scale", "shift", "mean", "rstd")
_NORM_INTS = [(n, int) for n in ("N", "C", "HW", "G", "silu", "one_plus_scale", "channels_last")]
GroupNormFwd = _kernel_args("GroupNormFwd", "group_norm", "group_norm_fwd",
                            _tensors("x", "y") + _NORM_PARAMS + _NORM_INTS + [("eps", float)])
GroupNormBwd = _kernel_args("GroupNormBwd", "group_norm", "group_norm_bwd",
                            _tensors("dy", "x") + _NORM_PARAMS + _tensors("dx", "sum_dz", "sum_dz_xhat") + _NORM_INTS)


class DDIMStep(NamedTuple):
    sample: Tensor
    model_output: Tensor
    noise: Optional[Tensor]
    alpha_t: Optional[Tensor]
    alpha_prev: Optional[Tensor]
    prev_sample: Tensor
    pred_original_sample: Tensor
    N: int
    L: int
    kind: int
    prediction_type: int
    clip: int
    use_clipped_model_output: int
    guidance: int
    alpha_t_dtype: int
    alpha_prev_dtype: int
    alpha_t_stride: int
    alpha_prev_stride: int
    alpha_t_value: float
    alpha_prev_value: float
    eta: float
    guidance_scale: float
    clip_range: float
    FAMILY = "ddim"
    KERNEL = "ddim_step"
    CPU_ONLY = False


class VQNearest(NamedTuple):
    z: Tensor
    codebook: Tensor
    index: Tensor
    min_dist: Tensor
    M: int
    K: int
    D: int
    cosine: int
    eps: float
    FAMILY = "vq"
    KERNEL = "vq_nearest"
    CPU_ONLY = False


# attention_fwd / attention_bwd: the same sizes and element strides (batch, head, row) of q, k, v, out
_ATTN_INTS = [(n, int) for n in ("B", "H", "Lq", "Lk", "D", "q_sb", "q_sh", "q_sl", "k_sb", "k_sh", "k_sl",
                                 "v_sb", "v_sh", "v_sl", "o_sb", "o_sh", "o_sl", "causal")]


AttentionFwd = _kernel_args("AttentionFwd", "attention", "attention_fwd",
                            _tensors("q", "k", "v", "key_padding_mask", "out", "lse") + _ATTN_INTS + [("scale", float)])
AttentionBwd = _kernel_args("AttentionBwd", "attention", "attention_bwd",
                            _tensors("q", "k", "v", "key_padding_mask", "out", "dout", "lse", "dq", "dk", "dv")
                            + _ATTN_INTS + [("scale", float)])


# conv_rows: a convolution or linear layer with few output rows, for genkernels.models.onednn's CPU inference
ConvRows = _kernel_args("ConvRows", "conv_rows", "conv_rows",
                        _tensors("x", "w", "bias", "y")
                        + [(n, int) for n in ("B", "H", "W", "C", "N", "KH", "KW", "Ho", "Wo", "stride_h", "stride_w",
                                              "pad_h", "pad_w", "dil_h", "dil_w")],
                        cpu_only=True)


KERNEL_ARGS = (GroupNormFwd, GroupNormBwd, DDIMStep, VQNearest, AttentionFwd, AttentionBwd, ConvRows)
