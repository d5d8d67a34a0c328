"""adain: adaptive instance normalisation, (x - mean_nc) / sqrt(var_nc + eps) * style_scale + style_bias.

The normalisation kernel family of group_norm_silu with one channel per group and the style as a
per-(n, c) affine (``_norm.py``, one_plus_scale=False). Instance norm is the special case handled by
``genkernels.nn.InstanceNorm2d`` (group_norm_silu with num_groups = C, no activation).
Double backward (StyleGAN's path-length / R1 penalties) differentiates the reference formula.
"""
from __future__ import annotations

from typing import Tuple

import torch

from ..backend import current_backend, resolve
from . import _norm
from ._common import Op, as_float, check_eps, check_param, check_tensor

Tensor = torch.Tensor
OP = "adain"


def _backend(x, *_):
    """The backend the registered op runs on for these arguments."""
    return resolve(OP, x)


def _forward(x, style_scale, style_bias, eps):
    """The registered op's implementation, without the argument checks."""
    return _norm.norm_forward(_backend(x), x, x.shape[1], None, None, style_scale, style_bias, eps,
                              False, False)


def _reference(x, style_scale, style_bias, eps):
    return _norm.reference_forward(x, x.shape[1], None, None, style_scale, style_bias, eps, False, False)


@torch.library.custom_op("genkernels::adain", mutates_args=())
def adain_op(x: Tensor, style_scale: Tensor, style_bias: Tensor, eps: float) -> Tuple[Tensor, Tensor, Tensor]:
    check_args(x, style_scale, style_bias, eps)
    return _forward(x, style_scale, style_bias, eps)


@adain_op.register_fake
def _(x, style_scale, style_bias, eps):
    check_args(x, style_scale, style_bias, eps)
    return _norm.fake_forward(x, x.shape[1])


def _setup_context(ctx, inputs, output):
    x, style_scale, style_bias, eps = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, None, None, style_scale, style_bias, mean, rstd)
    ctx.eps = eps
    ctx.mark_non_differentiable(mean, rstd)
    ctx.backend = current_backend()
    n = ctx.needs_input_grad
    ctx.needs_input_grad_for = (n[0], False, False, n[1], n[2])


def _backward(ctx, gy, _gmean, _grstd):
    gx, _, _, gs, gb = _norm.autograd_backward(ctx, gy, ctx.saved_tensors[0].shape[1], ctx.eps, False, False)
    return gx, gs, gb, None


def check_args(x, style_scale, style_bias, eps) -> None:
    """The registered op's arguments: raises a ValueError/TypeError naming the bad one."""
    check_tensor(OP, "x", x, min_dim=3)
    if x.dim() > 5:
        raise ValueError(f"{OP}: `x` must be [N, C, *spatial] with 1 to 3 spatial dims, got shape {tuple(x.shape)}")
    N, C = x.shape[:2]
    device = x.device
    for name, t in (("style_scale", style_scale), ("style_bias", style_bias)):
        if t is None:
            raise TypeError(f"{OP}: `{name}` is required (use genkernels.nn.InstanceNorm2d for plain instance norm)")
        check_param(OP, name, t, (N, C), device)
    check_eps(OP, eps)


_run = Op(OP, adain_op, check_args, _forward, _reference, _setup_context, _backward, _backend)


def adain(x: Tensor, style_scale: Tensor, style_bias: Tensor, eps: float = 1e-5) -> Tensor:
    """(x - mean_nc) / sqrt(var_nc + eps) * style_scale[n, c] + style_bias[n, c].

    x: [N, C, *spatial] (1 to 3 spatial dims), float32/float16/bfloat16/float64, NCHW or channels_last
    (kept); style_scale, style_bias: [N, C]. Statistics in float32 (float64 for float64 input).
    """
    return _run(x, style_scale, style_bias, as_float(OP, "eps", eps))[0]


def adain_reference(x: Tensor, style_scale: Tensor, style_bias: Tensor, eps: float = 1e-5) -> Tensor:
    """The eager-PyTorch specification of adain (differentiable to any order)."""
    eps = as_float(OP, "eps", eps)
    check_args(x, style_scale, style_bias, eps)
    return _norm.reference_forward(x, x.shape[1], None, None, style_scale, style_bias, eps, False, False)[0]
