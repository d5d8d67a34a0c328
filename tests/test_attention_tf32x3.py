"""float32 attention on the Triton backend multiplies with input_precision="tf32x3" (triton/attention.py):
each float32 operand x is split into hi = tf32(x) (cvt.rna: 10 mantissa bits, ties away) and lo = x - hi,
and a @ b = a_hi @ b_hi + (a_lo @ b_hi + a_hi @ b_lo) on the tensor cores (lo's own conversion there is
taken as truncation, the worse case), with float32 sums. The interpreter ignores input_precision, so the
GPU arithmetic is emulated here in torch on the CPU, in a FlashAttention-style forward and backward with
every product so split, and held to tests/test_attention.py's float32 criterion (2x naive float32 eager's
error vs float64, plus the floor). Single TF32 fails that criterion: the check can tell them apart.

Lk = 1 is left out: there the reference gradients dq, dk are exactly 0, the bound is the floor alone, and
dp - delta (two float32 dot products of the same numbers, summed in different orders) already misses
it with exact float32 products."""
import pytest
import torch

from test_attention import CAUSAL_SHAPES, FLOOR, SHAPES, eager, err, fwd_bwd, grad_out, make


def _tf32(x, round_nearest):
    """x (float32) with its 13 low mantissa bits dropped, rounded to nearest (ties away) or truncated."""
    bits = x.view(torch.int32)
    if round_nearest:
        bits = bits + 0x1000  # sign-magnitude: rounds the magnitude half away from zero
    return (bits & ~0x1FFF).view(torch.float32)


def _mm_tf32x3(a, b):
    a_hi, b_hi = _tf32(a, True), _tf32(b, True)
    a_lo, b_lo = _tf32(a - a_hi, False), _tf32(b - b_hi, False)
    return a_hi @ b_hi + (a_lo @ b_hi + a_hi @ b_lo)


def _mm_tf32(a, b):
    return _tf32(a, True) @ _tf32(b, True)


class _Attention(torch.autograd.Function):
    """softmax(q k^T * scale) v with the backward of triton/attention.py (delta = rowsum(out * dout),
    ds = p * (dp - delta)); every product through mm."""

    @staticmethod
    def forward(ctx, q, k, v, mask, causal, mm):
        scale = q.shape[-1] ** -0.5
        keep = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool)
        if causal:
            keep = keep.tril()
        keep = keep.expand(q.shape[0], 1, -1, -1)
        if mask is not None:
            keep = keep & ~mask[:, None, None, :]
        s = (mm(q, k.transpose(-1, -2)) * scale).masked_fill(~keep, float("-inf"))
        m = s.amax(-1, keepdim=True)
        p = torch.exp(s - m)
        l = p.sum(-1, keepdim=True)
        out = mm(p, v) / l
        ctx.save_for_backward(q, k, v, out, m + torch.log(l), keep)
        ctx.mm, ctx.scale = mm, scale
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse, keep = ctx.saved_tensors
        mm, scale = ctx.mm, ctx.scale
        delta = (out * dout).sum(-1, keepdim=True)
        p = torch.where(keep, torch.exp(mm(q, k.transpose(-1, -2)) * scale - lse), 0.0)
        ds = torch.where(keep, p * (mm(dout, v.transpose(-1, -2)) - delta), 0.0)
        dq = mm(ds, k) * scale
        dk = mm(ds.transpose(-1, -2), q) * scale
        dv = mm(p.transpose(-1, -2), dout)
        return dq, dk, dv, None, None, None


def _worst_ratio(mm):
    """The largest error / bound of tests/test_attention.py's float32 criterion over its shapes, masked
    or not, causal or not (bound: 2x eager's error + the floor)."""
    worst = 0.0
    for causal, shapes in ((False, SHAPES), (True, CAUSAL_SHAPES)):
        for masked in (False, True):
            for shape in shapes:
                if shape[3] == 1:
                    continue
                q, k, v, mask = (t.cpu() if t is not None else None
                                 for t in make(*shape, torch.float32, masked=masked))
                dout = grad_out(q, v).cpu()
                ce = lambda *a: eager(*a, causal=causal)  # noqa: E731
                ours = fwd_bwd(lambda *a: _Attention.apply(*a, causal, mm), q, k, v, mask, dout)
                ref = fwd_bwd(ce, *(t.double() for t in (q, k, v)), mask, dout)
                eag = fwd_bwd(ce, q, k, v, mask, dout)
                for o, e, r in zip(ours, eag, ref):
                    bound = 2 * err(e, r) + FLOOR[torch.float32] * max(1.0, r.abs().max().item())
                    worst = max(worst, err(o, r) / bound)
    return worst


def test_tf32x3_products_keep_float32_accuracy():
    assert _worst_ratio(_mm_tf32x3) <= 1.0


def test_single_tf32_products_would_not():
    assert _worst_ratio(_mm_tf32) > 10.0


@pytest.mark.parametrize("round_nearest", [True, False])
def test_tf32_rounding(round_nearest):
    x = torch.tensor([1 + 2**-11, 1 + 3 * 2**-11, -(1 + 2**-11), 1 + 2**-12, 3.0], dtype=torch.float32)
    nearest = [1 + 2**-10, 1 + 4 * 2**-11, -(1 + 2**-10), 1.0, 3.0]
    truncated = [1.0, 1 + 2**-10, -1.0, 1.0, 3.0]
    assert _tf32(x, round_nearest).tolist() == (nearest if round_nearest else truncated)
