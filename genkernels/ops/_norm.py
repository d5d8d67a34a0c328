"""The normalisation kernel family shared by group_norm_silu and adain.

    z = ((x - mean[n,g]) * rstd[n,g] * w[c] + b[c]) * s[n,c] + shift[n,c];   y = silu(z) or z
    s = 1 + scale (group_norm_silu's FiLM) or scale (adain's style scale); 1 without scale.

``norm_forward``/``norm_backward`` run one backend and return plain tensors; the public ops wrap them
in ``torch.library`` registrations with autograd, run as every op runs (``_common.Op``: plain eager
calls skip the dispatcher, with the registered autograd's own formulas). Kernels: csrc/cpu/kernels/group_norm.cpp,
csrc/cuda/group_norm.cu, genkernels/triton/group_norm.py (argument order: csrc/common/norm_args.h).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from ..backend import resolve
from ._common import Op, acc_dtype, check_param, check_tensor, dense_layout, empty_out, launch, param, to_layout
from ._kernels import GroupNormBwd, GroupNormFwd

Tensor = torch.Tensor


def _film(t: Optional[Tensor], x: Tensor) -> Optional[Tensor]:
    return None if t is None else t.reshape(t.shape + (1,) * (x.dim() - 2))


def reference_forward(x, G, w, b, scale, shift, eps, silu, one_plus_scale) -> Tuple[Tensor, Tensor, Tensor]:
    """Eager PyTorch, computed in the accumulation dtype (float32 for 16-bit data): the spec."""
    acc = acc_dtype(x.dtype)
    N, C = x.shape[:2]
    if x.numel() == 0:  # (as the kernels: no statistics to compute; C = 0 has G = 0 for adain)
        nan = x.new_full((N, G), float("nan"), dtype=acc)
        return empty_out(x), nan, nan.clone()
    xa = x.to(acc)
    xg = xa.reshape(N, G, (C // G) * math.prod(x.shape[2:]))
    mean = xg.mean(-1)
    mean = mean + (xg - mean[..., None]).mean(-1)  # one correction pass: float32 sums of large values drift
    var = (xg - mean[..., None]).square().mean(-1)  # two-pass: exact for large means
    rstd = torch.rsqrt(var + eps)
    z = ((xg - mean[..., None]) * rstd[..., None]).reshape(x.shape)
    bshape = (1, C) + (1,) * (x.dim() - 2)
    if w is not None:
        z = z * w.to(acc).reshape(bshape)
    if b is not None:
        z = z + b.to(acc).reshape(bshape)
    if scale is not None:
        s = _film(scale.to(acc), x)
        z = z * (1 + s) if one_plus_scale else z * s
    if shift is not None:
        z = z + _film(shift.to(acc), x)
    y = F.silu(z) if silu else z
    fmt = torch.channels_last if (x.dim() == 4 and _is_cl(x)) else None
    y = y.to(x.dtype)
    if fmt is not None:
        y = y.contiguous(memory_format=fmt)
    elif x.dim() > 2 and _is_cl(x):
        y = to_layout(y, True)
    return y, mean, rstd


def _is_cl(x):
    from ._common import is_channels_last

    return is_channels_last(x)


def reference_backward(dy, x, mean, rstd, w, b, scale, shift, G, silu, one_plus_scale):
    """The backward formula in eager PyTorch (accumulation dtype), step for step what the kernels do:
    dz = dy * act'(z); per-(n, c) sums of dz and dz*xhat; dx = rstd*(gamma*dz - mean_g(gamma*dz)
    - xhat*mean_g(gamma*dz*xhat)). Returns (dx, dw, db, dscale, dshift)."""
    acc = acc_dtype(x.dtype)
    N, C = x.shape[:2]
    Cg, HW = C // G, math.prod(x.shape[2:])
    xg = x.to(acc).reshape(N, G, Cg, HW)
    xhat = (xg - mean[..., None, None]) * rstd[..., None, None]
    s = torch.ones((N, C), dtype=acc, device=x.device) if scale is None else (
        1 + scale.to(acc) if one_plus_scale else scale.to(acc))
    gamma = s if w is None else s * w.to(acc)
    off = (0.0 if b is None else b.to(acc) * s) + (0.0 if shift is None else shift.to(acc))
    dz = dy.to(acc).reshape(N, G, Cg, HW)
    if silu:
        z = xhat * gamma.reshape(N, G, Cg, 1) + (off.reshape(N, G, Cg, 1) if torch.is_tensor(off) else off)
        sg = torch.sigmoid(z)
        dz = dz * sg * (1 + z * (1 - sg))
    sdz = dz.sum(-1).reshape(N, C)
    sdzx = (dz * xhat).sum(-1).reshape(N, C)
    gm = gamma.reshape(N, G, Cg)
    mB = (gm * sdz.reshape(N, G, Cg)).sum(-1) / (Cg * HW)
    mA = (gm * sdzx.reshape(N, G, Cg)).sum(-1) / (Cg * HW)
    dx = rstd[..., None, None] * (gm[..., None] * dz - mB[..., None, None] - xhat * mA[..., None, None])
    dx = to_layout(dx.reshape(x.shape).to(x.dtype), x.dim() > 2 and _is_cl(x))
    return (dx,) + param_grads(sdz, sdzx, w, b, scale, one_plus_scale)


def differentiable_grads(dy, x, w, b, scale, shift, G, eps, silu, one_plus_scale):
    """Backward with create_graph=True (double backward, e.g. R1 / path-length penalties): the
    gradient of the reference, itself differentiable. Returns grads for (x, w, b, scale, shift)."""
    ins = [x, w, b, scale, shift]
    need = [i for i, t in enumerate(ins) if t is not None and t.requires_grad]
    y, _, _ = reference_forward(x, G, w, b, scale, shift, eps, silu, one_plus_scale)
    gs = torch.autograd.grad(y, [ins[i] for i in need], dy, create_graph=True, allow_unused=True)
    out = [None] * 5
    for i, g in zip(need, gs):
        out[i] = g
    return out


def norm_forward(backend, x, G, weight, bias, scale, shift, eps, silu, one_plus_scale):
    """(y, mean [N, G], rstd [N, G]) on `backend`; y keeps x's memory format."""
    if backend == "reference":
        return reference_forward(x, G, weight, bias, scale, shift, eps, silu, one_plus_scale)
    acc = acc_dtype(x.dtype)
    N, C = x.shape[:2]
    x, channels_last = dense_layout(x)
    y = torch.empty_like(x)  # x is densely packed: its strides are empty_out(x)'s (what the fake returns)
    mean = x.new_empty((N, G), dtype=acc)
    rstd = x.new_empty((N, G), dtype=acc)
    if y.numel() == 0:
        return y, mean.fill_(float("nan")), rstd.fill_(float("nan"))
    HW = math.prod(x.shape[2:])
    weight, bias, scale, shift = param(weight, acc), param(bias, acc), param(scale, acc), param(shift, acc)
    silu, one_plus_scale, channels_last = int(silu), int(one_plus_scale), int(channels_last)
    # positional, from variables named as GroupNormFwd's fields (tests/test_native_args.py)
    launch(backend, GroupNormFwd(x, y, weight, bias, scale, shift, mean, rstd, N, C, HW, G, silu, one_plus_scale,
                                 channels_last, eps), x.dtype)
    return y, mean, rstd


def norm_backward(backend, dy, x, mean, rstd, weight, bias, scale, shift, G, eps, silu, one_plus_scale):
    """(dx, dw [C], db [C], dscale [N, C], dshift [N, C]); parameter grads in the accumulation dtype."""
    if backend == "reference":
        return reference_backward(dy, x, mean, rstd, weight, bias, scale, shift, G, silu, one_plus_scale)
    acc = acc_dtype(x.dtype)
    N, C = x.shape[:2]
    x, channels_last = dense_layout(x)
    dy = to_layout(dy.to(x.dtype), channels_last)
    dx = torch.empty_like(x)  # x is densely packed: its strides are empty_out(x)'s
    sum_dz = torch.zeros((N, C), dtype=acc, device=x.device)
    sum_dz_xhat = torch.zeros((N, C), dtype=acc, device=x.device)
    weight, bias, scale, shift = param(weight, acc), param(bias, acc), param(scale, acc), param(shift, acc)
    if dx.numel():
        HW = math.prod(x.shape[2:])
        mean, rstd = mean.contiguous(), rstd.contiguous()
        silu, one_plus_scale, channels_last = int(silu), int(one_plus_scale), int(channels_last)
        # positional, from variables named as GroupNormBwd's fields (tests/test_native_args.py)
        launch(backend, GroupNormBwd(dy, x, weight, bias, scale, shift, mean, rstd, dx, sum_dz, sum_dz_xhat,
                                     N, C, HW, G, silu, one_plus_scale, channels_last), x.dtype)
    return (dx,) + param_grads(sum_dz, sum_dz_xhat, weight, bias, scale, one_plus_scale)


def param_grads(sdz, sdzx, w, b, scale, one_plus_scale):
    """dw, db, dscale, dshift from the kernels' per-(n, c) sums of dz and dz*xhat (tiny [N, C] math;
    only what the arguments need: on small maps these few ops are a visible part of a backward).
    dw / db of an absent weight / bias are zeros (the registered op returns all five)."""
    acc = sdz.dtype
    s = None if scale is None else (1 + scale.to(acc) if one_plus_scale else scale.to(acc))
    dw = (sdzx if s is None else sdzx * s).sum(0) if w is not None else sdz.new_zeros(sdz.shape[1])
    db = (sdz if s is None else sdz * s).sum(0) if b is not None else sdz.new_zeros(sdz.shape[1])
    dscale = sdzx if w is None else sdzx * w.to(acc)  # d z / d s = xhat*w + b
    if b is not None:
        dscale = dscale + sdz * b.to(acc)
    return dw, db, dscale, sdz


# One backward op for the whole family; the public ops' autograd formulas call it.
@torch.library.custom_op("genkernels::norm_backward", mutates_args=())
def norm_backward_op(dy: Tensor, x: Tensor, mean: Tensor, rstd: Tensor, weight: Optional[Tensor],
                     bias: Optional[Tensor], scale: Optional[Tensor], shift: Optional[Tensor],
                     num_groups: int, eps: float, silu: bool, one_plus_scale: bool, backend: str
                     ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """`backend`: the one the forward ran on ("auto": resolve now)."""
    check_backward_args(dy, x, mean, rstd, weight, bias, scale, shift, num_groups)
    return _backward_impl(dy, x, mean, rstd, weight, bias, scale, shift, num_groups, eps, silu, one_plus_scale,
                          backend)


def _backward_impl(dy, x, mean, rstd, weight, bias, scale, shift, num_groups, eps, silu, one_plus_scale, backend):
    """norm_backward_op's implementation, without the argument checks."""
    backend = _backward_backend(dy, x, mean, rstd, weight, bias, scale, shift, num_groups, eps, silu,
                                one_plus_scale, backend)
    return tuple(t.contiguous() if i else t for i, t in enumerate(
        norm_backward(backend, dy, x, mean, rstd, weight, bias, scale, shift, num_groups, eps, silu, one_plus_scale)))


def check_backward_args(dy, x, mean, rstd, w, b, scale, shift, G, *_):
    """The registered backward's arguments (callable directly through torch.ops.genkernels)."""
    op = "norm_backward"
    check_tensor(op, "x", x, min_dim=2)
    check_tensor(op, "dy", dy)
    if dy.shape != x.shape or dy.device != x.device:
        raise ValueError(f"{op}: `dy` must match `x` {tuple(x.shape)} on {x.device}, got {tuple(dy.shape)} on {dy.device}")
    N, C = x.shape[:2]
    if isinstance(G, bool) or not isinstance(G, int) or G <= 0 or C % G:
        raise ValueError(f"{op}: `num_groups`={G!r} must be a positive int dividing the {C} channels of `x`")
    device = x.device
    for name, t in (("mean", mean), ("rstd", rstd)):
        check_param(op, name, t, (N, G), device)
    for name, t, shape in (("weight", w, (C,)), ("bias", b, (C,)), ("scale", scale, (N, C)), ("shift", shift, (N, C))):
        check_param(op, name, t, shape, device)


@norm_backward_op.register_fake
def _(dy, x, mean, rstd, weight, bias, scale, shift, num_groups, eps, silu, one_plus_scale, backend):
    check_backward_args(dy, x, mean, rstd, weight, bias, scale, shift, num_groups)
    acc = acc_dtype(x.dtype)
    N, C = x.shape[:2]
    dx = empty_out(x)
    return (dx, x.new_empty((C,), dtype=acc), x.new_empty((C,), dtype=acc),
            x.new_empty((N, C), dtype=acc), x.new_empty((N, C), dtype=acc))


def _backward_backend(dy, x, mean, rstd, weight, bias, scale, shift, num_groups, eps, silu, one_plus_scale,
                      backend):
    """The backend norm_backward_op runs on: `backend` (the forward's), "auto" resolved now."""
    return resolve("norm_backward", x, name=backend)


_run_backward = Op("norm_backward", norm_backward_op, check_backward_args, _backward_impl,
                   backend=_backward_backend)


def fake_forward(x, num_groups):
    N = x.shape[0]
    acc = acc_dtype(x.dtype)
    return (empty_out(x), x.new_empty((N, num_groups), dtype=acc),
            x.new_empty((N, num_groups), dtype=acc))


def autograd_backward(ctx, gy, G, eps, silu, one_plus_scale):
    """Gradients for (x, weight, bias, scale, shift) from the saved forward state, on the backend the
    forward used (ctx.backend), even when the backward runs after a `use_backend` block has ended."""
    x, w, b, scale, shift, mean, rstd = ctx.saved_tensors
    if torch.is_grad_enabled():
        grads = differentiable_grads(gy, x, w, b, scale, shift, G, eps, silu, one_plus_scale)
    else:
        grads = _run_backward(gy, x, mean, rstd, w, b, scale, shift, G, eps, silu, one_plus_scale, ctx.backend)
    need = ctx.needs_input_grad_for
    return [g.to(t.dtype) if (t is not None and n and g is not None) else None
            for g, t, n in zip(grads, (x, w, b, scale, shift), need)]
