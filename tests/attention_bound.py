"""The error bound tests/test_attention.py holds every backend's attention to: for each element of the
output and of each gradient, a first-order floating-point error bound computed in float64 from the
magnitudes of the terms that make it (|q|, |k|, |v|, |dout|, the exact p, dp, delta, ds), not from the
result's magnitude. It is tight where results are large and honest where terms cancel: with one key
(Lk = 1), p = 1 and dq = dk = 0 exactly, yet any kernel's ds = p * (dp - delta), dp = dout . v and
delta = dout . out summed in different orders, leaves rounding noise of order u |dout| |v|, which this
bound allows and a bound scaled by |dq| (zero) cannot.

The kernel model (what every backend is allowed): inputs in the data dtype (dout too); each dot product of
n terms in float32 (float64 for float64 data; unit roundoff u) with error at most
gamma(n) = 2 (n + 20) u times the sum of its terms' magnitudes: each addition may truncate (tensor cores
do: 2u, not u), each product may carry 20u (tf32x3 operands, tests/test_attention_tf32x3.py). A
probability p_ij may be off relatively by its logit's error plus its exponential's, u (8 + 2|s| + 2|lse|),
plus the mean of those over its row (the normaliser, which this bound does not assume cancels: a kernel
may recompute the logits in the backward), plus the row sum's and the online rescaling's error, plus one
rounding to the data dtype (P and dS go to 16-bit operands; unit roundoff rho of the data dtype); every
stored result one rounding to its dtype. delta may be rowsum(dout * out), from the stored out, or
rowsum(p * dp) (the reference): the bound covers both."""
import torch


def gamma(n, u):
    """Error of an n-term dot product relative to the sum of its terms' magnitudes (see above)."""
    return 2 * (n + 20) * u


def visible(q, k, mask, causal):
    """[B, 1, Lq, Lk] bool on the CPU: key j visible to query i (not padding; j <= i when causal)."""
    keep = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool)
    if causal:
        keep = keep.tril()
    keep = keep.expand(q.shape[0], 1, -1, -1)
    return keep if mask is None else keep & ~mask.cpu()[:, None, None, :]


def reference_and_bound(q, k, v, mask, dout, causal=False, truncating_casts=False):
    """q, k, v [B, H, L, d] and dout [B, H, Lq, d] in the data dtype (rounded as the kernel sees them),
    mask [B, Lk] (True = padding) or None; truncating_casts: conversions to the data dtype truncate
    (a whole ulp) instead of rounding to nearest. Returns (ref, bound): (out, dq, dk, dv) each, float64
    on the CPU, ref exact (float64) from the same rounded inputs, bound elementwise."""
    dtype = q.dtype
    fi = torch.finfo(dtype)
    u = 2.0 ** -53 if dtype == torch.float64 else 2.0 ** -24
    rho = fi.eps if truncating_casts else fi.eps / 2  # one conversion to the data dtype
    tiny = fi.smallest_normal * fi.eps   # the spacing of its subnormals (underflow of a stored result)
    q, k, v, dout = (t.detach().double().cpu() for t in (q, k, v, dout))
    Lq, Lk, D = q.shape[-2], k.shape[-2], q.shape[-1]
    scale = D ** -0.5
    keep = visible(q, k, mask, causal)

    mT = lambda t: t.transpose(-1, -2)  # noqa: E731
    s = (q @ mT(k) * scale).masked_fill(~keep, float("-inf"))
    lse = torch.logsumexp(s, -1, keepdim=True)
    live = keep & torch.isfinite(lse)    # a fully masked row: zero output and gradients
    p = torch.where(live, torch.exp(s - torch.where(torch.isfinite(lse), lse, 0.0)), 0.0)
    out = p @ v
    dp = torch.where(live, dout @ mT(v), 0.0)
    delta = (dout * out).sum(-1, keepdim=True)
    ds = p * (dp - delta)
    dq, dk, dv = ds @ k * scale, mT(ds) @ q * scale, mT(p) @ dout

    aq, ak, av, ag = q.abs(), k.abs(), v.abs(), dout.abs()
    s0 = torch.where(live, s, 0.0).abs()
    lse0 = torch.where(torch.isfinite(lse), lse, 0.0).abs()
    # relative error of p_ij: its logit (a D-term dot, times scale) and its exponential ...
    x = torch.where(live, gamma(D + 1, u) * scale * (aq @ mT(ak)) + u * (8 + 2 * s0 + 2 * lse0), 0.0)
    # ... the row's normaliser (the p-weighted mean of those, the sum, the rescaling), the 16-bit operand
    eta = 2 * gamma(Lk, u) + 2 * u * s0.amax(-1, keepdim=True)
    e_p = p * (x + (p * x).sum(-1, keepdim=True) + eta + rho)
    pv = p @ av
    e_out = e_p @ av + gamma(Lk, u) * pv + rho * out.abs()
    e_dp = gamma(D, u) * (ag @ mT(av))
    e_delta = ((ag * e_out).sum(-1, keepdim=True) + gamma(D, u) * (ag * pv).sum(-1, keepdim=True)
               + gamma(Lk, u) * (p * dp.abs()).sum(-1, keepdim=True))
    e_ds = e_p * (dp - delta).abs() + p * (e_dp + e_delta) + (2 * u + rho) * ds.abs()
    e_dq = scale * (e_ds @ ak + gamma(Lk, u) * (ds.abs() @ ak)) + (u + rho) * dq.abs()
    e_dk = scale * (mT(e_ds) @ aq + gamma(Lq, u) * (mT(ds.abs()) @ aq)) + (u + rho) * dk.abs()
    e_dv = mT(e_p) @ ag + gamma(Lq, u) * (mT(p) @ ag) + rho * dv.abs()
    return (out, dq, dk, dv), tuple(e + tiny for e in (e_out, e_dq, e_dk, e_dv))


def worst_ratios(ours, q, k, v, mask, dout, causal=False, truncating_casts=False):
    """{name: max over elements of |ours - ref| / bound} for ours = (out, dq, dk, dv) (NaN counts as
    infinitely wrong); <= 1 is within the bound."""
    ref, bound = reference_and_bound(q, k, v, mask, dout, causal, truncating_casts)
    ratios = {}
    for name, o, r, b in zip(("out", "dq", "dk", "dv"), ours, ref, bound):
        if not o.numel():
            ratios[name] = 0.0
            continue
        e = (o.detach().double().cpu() - r).abs().nan_to_num(float("inf"))
        ratios[name] = (e / b).max().item()
    return ratios
