"""Conv2d and Linear: ``nn.Conv2d`` / ``nn.Linear`` (same parameters, state_dict and results) whose CPU
inference calls run on the kernel that is fastest for their shape; ``use_onednn(model)`` swaps them into a
model.

Eager ``F.conv2d`` on the CPU reorders the weight into oneDNN's blocked layout on every call, and
``F.linear`` packs it for the GEMM on every call; for the UNet's convolutions at small spatial sizes
(latents of 16x16 and below, down to 2x2 at the lowest level: few rows, large weights) that costs about as
much as the arithmetic. Here a call that autograd does not record (no_grad / inference, or frozen weights
and input), on a float32 CPU tensor in plain eager mode, takes one of:
  - at most _FEW_ROWS output rows (batch x output pixels; a linear layer's input rows): genkernels'
    ``conv_rows`` kernel (csrc/cpu/kernels/conv_rows.cpp), which streams the weight once in its own
    layout and leaves out zero-padding taps, where oneDNN and MKL block and pack for large row counts. It
    runs with the ``auto`` and ``cpu`` backends (``genkernels.use_backend``); ``reference`` keeps torch's
    kernels below;
  - convolutions: oneDNN on a reordered copy of the weight kept with the module (one per input shape;
    rebuilt when the weight is changed in place or replaced), or, for a 1x1 convolution of at least
    _GEMM_ROWS pixels, one F.linear;
  - linear layers at least _WIDE times wider out than in with at least _MIN_WEIGHT weights (the UNet's
    GEGLU projections): oneDNN on a reordered weight; other linear layers: F.linear. For those shapes
    F.linear was as fast or faster: a oneDNN linear call costs more than MKL's GEMM call, and packing a
    weight of up to a few MB per call costs less than that difference.
Convolutions compute in channels_last, oneDNN's layout, and return channels_last, so a network of them
converts its input once. Every other call (training, torch.compile, other dtypes and devices, padding
modes other than zeros) is the torch module's own forward. The thresholds were measured per shape and
per UNet step: bench/results/models/diffusion/onednn_linear_rule.py, conv1x1_rule.py, conv_rows_rule.py.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .. import _native
from ..backend import current_backend
from ..ops._common import needs_grad, plain_eager
from ..ops._kernels import ConvRows

Tensor = torch.Tensor
_MAX_SHAPES = 4   # reordered weights kept per module (input shapes seen), oldest dropped first
# Linear layers on oneDNN: out >= _WIDE x in and in x out >= _MIN_WEIGHT, the shapes where oneDNN beat F.linear
# (bench/results/models/diffusion/onednn_linear_rule.py)
_WIDE, _MIN_WEIGHT = 4, 2 ** 19
# output rows up to which conv_rows beats oneDNN / MKL (bench/results/models/diffusion/conv_rows_rule.py)
_FEW_ROWS = 32
# 1x1 convolutions of at least this many pixels (N*H*W) run as F.linear (bench/results/models/diffusion/conv1x1_rule.py)
_GEMM_ROWS = 32


def _usable(x: Tensor, weight: Tensor, bias) -> bool:
    # plain_eager first: under torch.compile it is the constant False and nothing after it is traced
    # (mkldnn.is_available() is a function dynamo skips: a graph break in every layer otherwise)
    return (plain_eager(x, weight, bias) and x.device.type == "cpu" and x.dtype == torch.float32
            and weight.dtype == torch.float32
            and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
            and not needs_grad(x, weight, bias))


def _own_kernel() -> bool:
    """genkernels' CPU kernels may run: the auto or cpu backend, and genkernels._C built."""
    return current_backend() in ("auto", "cpu") and _native.load("_C") is not None


def _conv_rows(x: Tensor, w: Tensor, bias: Optional[Tensor], Ho: int, Wo: int, stride, padding,
               dilation) -> Tensor:
    """y [B, Ho, Wo, N] = the convolution of x [B, H, W, C] with w [N, KH, KW, C] (both dense), by conv_rows
    (its semantics: csrc/common/conv_rows_args.h)."""
    x, w, bias = x.contiguous(), w.contiguous(), None if bias is None else bias.contiguous()
    B, H, W, C = x.shape
    N, KH, KW = w.shape[:3]
    (stride_h, stride_w), (pad_h, pad_w), (dil_h, dil_w) = stride, padding, dilation
    y = x.new_empty(B, Ho, Wo, N)
    _native.call(ConvRows(x, w, bias, y, B, H, W, C, N, KH, KW, Ho, Wo, stride_h, stride_w, pad_h, pad_w, dil_h,
                          dil_w), torch.float32)
    return y


class _Reordered:
    """The cache of reordered weights, keyed by input shape, stamped with the weight's storage and version
    (a replaced or in-place-updated weight is reordered again)."""

    def _reordered(self, key: Tuple, reorder: Callable[[Tensor], Tensor]) -> Tensor:
        cache: Dict[Tuple, Tuple[Tuple, Tensor]] = self.__dict__.setdefault("_onednn", {})
        w = self.weight
        stamp = (w.data_ptr(), w._version)
        hit = cache.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        packed = reorder(w.detach())
        if len(cache) >= _MAX_SHAPES:
            cache.pop(next(iter(cache)))
        cache[key] = (stamp, packed)
        return packed

    def _apply(self, fn, recurse=True):
        self.__dict__.pop("_onednn", None)   # .to() / .half() / .cuda(): the copies describe the old weight
        return super()._apply(fn, recurse)

    def __getstate__(self):   # copy / deepcopy / pickle: oneDNN's opaque tensors have no storage to copy
        state = self.__dict__.copy()
        state.pop("_onednn", None)
        return state


class Conv2d(_Reordered, nn.Conv2d):
    """``nn.Conv2d``; inference on the CPU by conv_rows for few output rows, through a cached oneDNN weight,
    or as one GEMM for a pointwise (1x1) convolution of at least _GEMM_ROWS pixels (see the module
    docstring)."""

    def _out_size(self, x: Tensor) -> Tuple[int, int]:
        return tuple((x.shape[2 + d] + 2 * self.padding[d] - self.dilation[d] * (self.kernel_size[d] - 1) - 1)
                     // self.stride[d] + 1 for d in (0, 1))

    def _pointwise_rows(self, x: Tensor) -> int:
        """N*H*W for a 1x1, stride-1, unpadded, ungrouped convolution of `x`, else 0."""
        pointwise = (self.kernel_size == (1, 1) and self.stride == (1, 1) and tuple(self.padding) == (0, 0)
                     and self.groups == 1)
        return x.shape[0] * x.shape[2] * x.shape[3] if pointwise else 0

    def forward(self, x: Tensor) -> Tensor:
        if not (_usable(x, self.weight, self.bias) and x.dim() == 4 and self.padding_mode == "zeros"
                and not isinstance(self.padding, str) and x.shape[1] == self.in_channels):
            return super().forward(x)
        x = x.contiguous(memory_format=torch.channels_last)
        bias = self.bias.detach() if self.bias is not None else None
        Ho, Wo = self._out_size(x)
        if self.groups == 1 and Ho > 0 and Wo > 0 and 0 < x.shape[0] * Ho * Wo <= _FEW_ROWS and _own_kernel():
            # the weight as [N, KH, KW, C] (a view of a channels_last weight, else a copy kept as below)
            w = self._reordered(("rows",), lambda w: w.permute(0, 2, 3, 1).contiguous())
            y = _conv_rows(x.permute(0, 2, 3, 1), w, bias, Ho, Wo, self.stride, self.padding, self.dilation)
            return y.permute(0, 3, 1, 2)
        if self._pointwise_rows(x) >= _GEMM_ROWS:
            # a 1x1 convolution of channels_last pixels is one GEMM over the pixel rows: MKL's F.linear
            # beats oneDNN's 1x1 convolution there (conv1x1_rule.py); the output is channels_last as below
            w = self.weight.detach().reshape(self.out_channels, self.in_channels)
            return F.linear(x.permute(0, 2, 3, 1), w, bias).permute(0, 3, 1, 2)
        geometry = (list(self.padding), list(self.stride), list(self.dilation), self.groups)
        w = self._reordered(tuple(x.shape), lambda w: torch.ops.mkldnn._reorder_convolution_weight(
            w, *geometry, list(x.shape)))
        return torch.ops.mkldnn._convolution_pointwise(x, w, bias, *geometry, "none", [], "")


class Linear(_Reordered, nn.Linear):
    """``nn.Linear``; inference on the CPU by conv_rows for few rows, through a cached oneDNN weight for
    wide layers, else F.linear (see the module docstring)."""

    def forward(self, x: Tensor) -> Tensor:
        n = x.numel() // x.shape[-1] if x.dim() >= 1 and x.shape[-1] > 0 else 0
        if not (n > 0 and x.shape[-1] == self.in_features and _usable(x, self.weight, self.bias)):
            return super().forward(x)
        bias = self.bias.detach() if self.bias is not None else None
        if n <= _FEW_ROWS and _own_kernel():
            w = self.weight.detach()
            y = _conv_rows(x.reshape(n, 1, 1, self.in_features), w.reshape(self.out_features, 1, 1, self.in_features),
                           bias, 1, 1, (1, 1), (0, 0), (1, 1))
            return y.reshape(*x.shape[:-1], self.out_features)
        if _linear_keeps_torch(self):
            return super().forward(x)
        rows = x.reshape(n, x.shape[-1])
        w = self._reordered((n,), lambda w: torch.ops.mkldnn._reorder_linear_weight(w, n))
        y = torch.ops.mkldnn._linear_pointwise(rows, w, bias, "none", [], "")
        return y.reshape(*x.shape[:-1], y.shape[-1])


SWAPS = {nn.Conv2d: Conv2d, nn.Linear: Linear}   # plain torch class -> its oneDNN subclass


def _linear_keeps_torch(m: nn.Linear) -> bool:
    """F.linear beyond _FEW_ROWS rows: unless out >= _WIDE x in and in x out >= _MIN_WEIGHT (onednn_linear_rule.py)."""
    return not (m.out_features >= _WIDE * m.in_features and m.in_features * m.out_features >= _MIN_WEIGHT)


def use_onednn(module: nn.Module) -> nn.Module:
    """Every plain ``nn.Conv2d`` / ``nn.Linear`` in `module` becomes this file's subclass, in place (a class
    swap: parameters, state_dict keys, hooks and training untouched). Returns `module`."""
    for m in module.modules():
        if type(m) in SWAPS:
            m.__class__ = SWAPS[type(m)]
    return module


def restore(m: nn.Module, cls: type) -> None:
    """Undo a class swap of `m` to `cls` (genkernels.unpatch), dropping the reordered weights with it."""
    m.__dict__.pop("_onednn", None)
    m.__class__ = cls


__all__ = ["Conv2d", "Linear", "SWAPS", "use_onednn", "restore"]
