"""group_norm_silu: act(group_norm(x) * (1 + scale) + shift), fused (UNet / VAE ResNet blocks).

    y = genkernels.group_norm_silu(x, 32, weight, bias)                    # GroupNorm + SiLU
    y = genkernels.group_norm_silu(x, 32, weight, bias, scale=s, shift=t)  # AdaGN / time-embedding FiLM
    y = genkernels.group_norm_silu(x, 32, weight, bias, act=None)          # plain GroupNorm

Registered as ``torch.ops.genkernels.group_norm_silu`` (returns y, mean, rstd like aten's
native_group_norm) with a fake implementation and autograd, so it works under
``torch.compile(fullgraph=True)``. The kernels are the normalisation family in ``_norm.py``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from ..backend import current_backend, resolve
from . import _norm
from ._common import Op, as_float, check_eps, check_param, check_tensor

Tensor = torch.Tensor
OP = "group_norm_silu"


def _backend(x, *_):
    """The backend the registered op runs on for these arguments."""
    return resolve(OP, x)


def _forward(x, num_groups, weight, bias, eps, scale, shift, silu):
    """The registered op's implementation, without the argument checks."""
    return _norm.norm_forward(_backend(x), x, num_groups, weight, bias, scale, shift, eps, silu, True)


def _reference(x, num_groups, weight, bias, eps, scale, shift, silu):
    return _norm.reference_forward(x, num_groups, weight, bias, scale, shift, eps, silu, True)


@torch.library.custom_op("genkernels::group_norm_silu", mutates_args=())
def group_norm_silu_op(x: Tensor, num_groups: int, weight: Optional[Tensor], bias: Optional[Tensor],
                       eps: float, scale: Optional[Tensor], shift: Optional[Tensor], silu: bool
                       ) -> Tuple[Tensor, Tensor, Tensor]:
    check_args(x, num_groups, weight, bias, eps, scale, shift, silu)
    return _forward(x, num_groups, weight, bias, eps, scale, shift, silu)


@group_norm_silu_op.register_fake
def _(x, num_groups, weight, bias, eps, scale, shift, silu):
    check_args(x, num_groups, weight, bias, eps, scale, shift, silu)
    return _norm.fake_forward(x, num_groups)


def _setup_context(ctx, inputs, output):
    x, G, w, b, eps, scale, shift, silu = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, w, b, scale, shift, mean, rstd)
    ctx.G, ctx.eps, ctx.silu = G, eps, silu
    ctx.mark_non_differentiable(mean, rstd)
    ctx.backend = current_backend()
    n = ctx.needs_input_grad
    ctx.needs_input_grad_for = (n[0], n[2], n[3], n[5], n[6])


def _backward(ctx, gy, _gmean, _grstd):
    gx, gw, gb, gs, gh = _norm.autograd_backward(ctx, gy, ctx.G, ctx.eps, ctx.silu, True)
    return gx, None, gw, gb, None, gs, gh, None


def check_args(x, num_groups, weight, bias, eps, scale, shift, silu) -> None:
    """The registered op's arguments: raises a ValueError/TypeError naming the bad one."""
    check_tensor(OP, "x", x, min_dim=2)
    if x.dim() > 5:
        raise ValueError(f"{OP}: `x` must be [N, C, *spatial] with at most 3 spatial dims, got shape {tuple(x.shape)}")
    if isinstance(num_groups, bool) or not isinstance(num_groups, int):
        raise TypeError(f"{OP}: `num_groups` must be an int, got {type(num_groups).__name__}")
    N, C = x.shape[:2]
    if num_groups <= 0 or C % num_groups:
        raise ValueError(f"{OP}: `num_groups`={num_groups} must be positive and divide the {C} channels of `x`")
    device = x.device
    for name, t, shape in (("weight", weight, (C,)), ("bias", bias, (C,)),
                           ("scale", scale, (N, C)), ("shift", shift, (N, C))):
        check_param(OP, name, t, shape, device)
    check_eps(OP, eps)


_run = Op(OP, group_norm_silu_op, check_args, _forward, _reference, _setup_context, _backward, _backend)


def _silu(act) -> bool:
    """The public `act` as the registered op's flag."""
    if act not in ("silu", None):
        raise ValueError(f"{OP}: `act` must be 'silu' or None, got {act!r}")
    return act == "silu"


def group_norm_silu(x: Tensor, num_groups: int, weight: Optional[Tensor] = None, bias: Optional[Tensor] = None,
                    eps: float = 1e-5, *, scale: Optional[Tensor] = None, shift: Optional[Tensor] = None,
                    act: Optional[str] = "silu") -> Tensor:
    """act(group_norm(x, num_groups, weight, bias, eps) * (1 + scale) + shift).

    x: [N, C, *spatial] (0 to 3 spatial dims), float32/float16/bfloat16/float64, NCHW or channels_last
    (the output keeps x's memory format). weight, bias: [C]. scale, shift: [N, C]. act: "silu" or None.
    Statistics are computed in float32 (float64 for float64 input), exactly for inputs with a large mean.
    """
    return _run(x, num_groups, weight, bias, as_float(OP, "eps", eps), scale, shift, _silu(act))[0]


def group_norm_silu_reference(x: Tensor, num_groups: int, weight: Optional[Tensor] = None,
                              bias: Optional[Tensor] = None, eps: float = 1e-5, *, scale: Optional[Tensor] = None,
                              shift: Optional[Tensor] = None, act: Optional[str] = "silu") -> Tensor:
    """The eager-PyTorch specification of group_norm_silu (differentiable to any order)."""
    eps, silu = as_float(OP, "eps", eps), _silu(act)
    check_args(x, num_groups, weight, bias, eps, scale, shift, silu)
    return _norm.reference_forward(x, num_groups, weight, bias, scale, shift, eps, silu, True)[0]
