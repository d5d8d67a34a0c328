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


class GroupNormFwd(NamedTuple):
    x: Tensor
    y: Tensor
    weight: Optional[Tensor]
    bias: Optional[Tensor]
    scale: Optional[Tensor]
    shift: Optional[Tensor]
    mean: Tensor
    rstd: Tensor
    N: int
    C: int
    HW: int
    G: int
    silu: int
    one_plus_scale: int
    channels_last: int
    eps: float
    FAMILY = "group_norm"
    KERNEL = "group_norm_fwd"


class GroupNormBwd(NamedTuple):
    dy: Tensor
    x: Tensor
    weight: Optional[Tensor]
    bias: Optional[Tensor]
    scale: Optional[Tensor]
    shift: Optional[Tensor]
    mean: Tensor
    rstd: Tensor
    dx: Tensor
    sum_dz: Tensor
    sum_dz_xhat: Tensor
    N: int
    C: int
    HW: int
    G: int
    silu: int
    one_plus_scale: int
    channels_last: int
    FAMILY = "group_norm"
    KERNEL = "group_norm_bwd"


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


class AttentionFwd(NamedTuple):
    q: Tensor
    k: Tensor
    v: Tensor
    key_padding_mask: Optional[Tensor]
    out: Tensor
    lse: Tensor
    B: int
    H: int
    Lq: int
    Lk: int
    D: int
    q_sb: int
    q_sh: int
    q_sl: int
    k_sb: int
    k_sh: int
    k_sl: int
    v_sb: int
    v_sh: int
    v_sl: int
    o_sb: int
    o_sh: int
    o_sl: int
    causal: int
    scale: float
    FAMILY = "attention"
    KERNEL = "attention_fwd"


class AttentionBwd(NamedTuple):
    q: Tensor
    k: Tensor
    v: Tensor
    key_padding_mask: Optional[Tensor]
    out: Tensor
    dout: Tensor
    lse: Tensor
    dq: Tensor
    dk: Tensor
    dv: Tensor
    B: int
    H: int
    Lq: int
    Lk: int
    D: int
    q_sb: int
    q_sh: int
    q_sl: int
    k_sb: int
    k_sh: int
    k_sl: int
    v_sb: int
    v_sh: int
    v_sl: int
    o_sb: int
    o_sh: int
    o_sl: int
    causal: int
    scale: float
    FAMILY = "attention"
    KERNEL = "attention_bwd"


KERNEL_ARGS = (GroupNormFwd, GroupNormBwd, DDIMStep, VQNearest, AttentionFwd, AttentionBwd)
