"""float32 attention on the Triton backend as a GPU computes it, emulated in torch on the CPU (the
interpreter ignores input_precision), held to tests/test_attention.py's criterion (the first-order error
bound of tests/attention_bound.py) on all its float32 shapes, Lk = 1 included; and two defects that the
criterion must catch.

The emulated arithmetic (triton/attention.py): every product through input_precision="tf32x3": each
float32 operand x split into hi = tf32(x) (cvt.rna: 10 mantissa bits, ties away) and lo = x - hi, and
a @ b = a_hi @ b_hi + a_lo @ b_hi + a_hi @ b_lo (lo's own conversion taken as truncation, the worse case).
The tensor cores add the exact products of each k-step of 8 to the float32 accumulator and truncate the
sum (round toward zero, the worse case again). The backward as the kernel's: delta = rowsum(out * dout)
(a torch float32 sum), dp = dout @ v^T on the tensor cores, ds = p * (dp - delta): with one key dq and
dk are exactly 0 and these two sums of the same products, in different orders, leave the noise the
bound must allow."""
import pytest
import torch

from attention_bound import visible, worst_ratios
from test_attention import CAUSAL_SHAPES, SHAPES, fwd_bwd, grad_out, make

K_STEP = 8  # the k extent of one tf32 tensor-core instruction (mma m16n8k8)


def _tf32(x, round_nearest):
    """x (float32) with its 13 low mantissa bits dropped, rounded to nearest (ties away) or truncated."""
    bits = x.view(torch.int32)
    if round_nearest:
        bits = bits + 0x1000  # sign-magnitude: rounds the magnitude half away from zero
    return (bits & ~0x1FFF).view(torch.float32)


def _to_float32_toward_zero(x):
    """float64 -> float32 rounded toward zero."""
    y = x.float()
    return torch.where(y.double().abs() > x.abs(), torch.nextafter(y, torch.zeros_like(y)), y)


def _tensor_cores(pairs):
    """sum over (a, b) in pairs of a @ b, each product exact, accumulated in float32 per k-step of
    K_STEP with truncation."""
    K = pairs[0][0].shape[-1]
    acc = None
    for k0 in range(0, K, K_STEP):
        step = sum(a[..., k0:k0 + K_STEP].double() @ b[..., k0:k0 + K_STEP, :].double() for a, b in pairs)
        acc = _to_float32_toward_zero(step if acc is None else acc.double() + step)
    return acc


def _mm_tf32x3(a, b):
    a_hi, b_hi = _tf32(a, True), _tf32(b, True)
    a_lo, b_lo = _tf32(a - a_hi, False), _tf32(b - b_hi, False)
    return _tensor_cores([(a_hi, b_hi), (a_lo, b_hi), (a_hi, b_lo)])


def _mm_tf32(a, b):
    return _tensor_cores([(_tf32(a, True), _tf32(b, True))])


class _Attention(torch.autograd.Function):
    """softmax(q k^T * scale) v with the backward of triton/attention.py; every product through mm;
    drop_delta: the defect ds = p * dp."""

    @staticmethod
    def forward(ctx, q, k, v, mask, causal, mm, drop_delta):
        scale = q.shape[-1] ** -0.5
        keep = visible(q, k, mask, causal)
        s = (mm(q, k.transpose(-1, -2)) * scale).masked_fill(~keep, float("-inf"))
        m = s.amax(-1, keepdim=True)
        p = torch.exp(s - m)
        l = p.sum(-1, keepdim=True)
        out = mm(p, v) / l
        ctx.save_for_backward(q, k, v, out, m + torch.log(l), keep)
        ctx.mm, ctx.scale, ctx.drop_delta = mm, scale, drop_delta
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse, keep = ctx.saved_tensors
        mm, scale = ctx.mm, ctx.scale
        delta = 0.0 if ctx.drop_delta else (out * dout).sum(-1, keepdim=True)
        p = torch.where(keep, torch.exp(mm(q, k.transpose(-1, -2)) * scale - lse), 0.0)
        ds = torch.where(keep, p * (mm(dout, v.transpose(-1, -2)) - delta), 0.0)
        dq = mm(ds, k) * scale
        dk = mm(ds.transpose(-1, -2), q) * scale
        dv = mm(p.transpose(-1, -2), dout)
        return dq, dk, dv, None, None, None, None


CASES = [(causal, masked, shape) for causal, shapes in ((False, SHAPES), (True, CAUSAL_SHAPES))
         for masked in (False, True) for shape in shapes]


def _ratios(mm, drop_delta, causal, masked, shape):
    """(worst error / bound of out, dq, dk, dv, the emulated (out, dq, dk, dv), the float64 inputs)."""
    q, k, v, mask = (t.cpu() if t is not None else None for t in make(*shape, torch.float32, masked=masked))
    dout = grad_out(q, v).cpu().float()
    ours = fwd_bwd(lambda *a: _Attention.apply(*a, causal, mm, drop_delta), q, k, v, mask, dout)
    return worst_ratios(ours, q, k, v, mask, dout, causal), ours


def _ratio_over(mm, drop_delta, limit):
    """The first case's worst error / bound above `limit`, else the largest over all cases."""
    worst = 0.0
    for case in CASES:
        worst = max(worst, *_ratios(mm, drop_delta, *case)[0].values())
        if worst > limit:
            break
    return worst


def test_tf32x3_on_tensor_cores_within_bound():
    assert _ratio_over(_mm_tf32x3, False, 1.0) <= 1.0


def test_one_key_noise_is_real_and_within_bound():
    """Lk = 1: dq = dk = 0 exactly, the emulated kernel's are not (the noise above), and the bound holds."""
    (B, H, Lq, Lk, d), = [s for s in SHAPES if s[3] == 1]
    ratios, (_, dq, dk, _) = _ratios(_mm_tf32x3, False, False, False, (B, H, Lq, Lk, d))
    assert dq.abs().max() > 0 and dk.abs().max() > 0
    assert max(ratios.values()) <= 1.0, ratios


@pytest.mark.parametrize("defect", ["single tf32", "drop delta"])
def test_defects_break_the_bound(defect):
    mm, drop_delta = (_mm_tf32, False) if defect == "single tf32" else (_mm_tf32x3, True)
    assert _ratio_over(mm, drop_delta, 5.0) > 5.0


@pytest.mark.parametrize("round_nearest", [True, False])
def test_tf32_rounding(round_nearest):
    x = torch.tensor([1 + 2**-11, 1 + 3 * 2**-11, -(1 + 2**-11), 1 + 2**-12, 3.0], dtype=torch.float32)
    nearest = [1 + 2**-10, 1 + 4 * 2**-11, -(1 + 2**-10), 1.0, 3.0]
    truncated = [1.0, 1 + 2**-10, -1.0, 1.0, 3.0]
    assert _tf32(x, round_nearest).tolist() == (nearest if round_nearest else truncated)


def test_float32_toward_zero():
    one_up = 1 + 2.0**-23
    x = torch.tensor([1 + 2.0**-30, -(1 + 2.0**-30), one_up - 2.0**-40, 3.0], dtype=torch.float64)
    assert _to_float32_toward_zero(x).tolist() == [1.0, -1.0, 1.0, 3.0]
