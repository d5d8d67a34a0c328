"""attention: softmax(q kᵀ · scale) v, flash-style (online softmax, no Lq x Lk matrix in memory).

    out = genkernels.attention(q, k, v)                        # q [B, H, Lq, d], k/v [B, H, Lk, d]
    out = genkernels.attention(q, k, v, heads=8)               # token layout: q [B, Lq, H*d], k/v [B, Lk, H*d]
    out = genkernels.attention(q, k, v, key_padding_mask=pad)  # pad: bool [B, Lk], True = padding (ignored)
    out = genkernels.attention(q, k, v, is_causal=True)        # query i sees keys j <= i (text encoders)

``scale`` defaults to ``1 / sqrt(d)``. ``key_padding_mask`` follows ``nn.MultiheadAttention``: True marks
a key that is *ignored*. A query row whose keys are all masked gets an output of **zeros** (and zero
gradients), not NaN; its saved log-sum-exp is -inf. ``is_causal=True`` masks key j for query i when
j > i, top-left aligned like ``torch.nn.functional.scaled_dot_product_attention(is_causal=True)`` also
when Lq != Lk (rows i >= Lk see every key); every backend skips the key tiles that are wholly masked,
forward and backward, so causal self-attention costs about half of the full one.

Non-finite input (every backend): a key a query does not attend (padding, or hidden by ``is_causal``)
is ignored for that query: NaN/inf in its k or v rows reaches neither the query's output nor its
gradients, and NaN/inf in the query reaches no gradient of such a key (no 0 * NaN). NaN in a query row,
or in the k or v row of a key it attends to, makes that output row NaN (as the softmax's arithmetic
does); a fully masked row is zeros whatever its query holds.

Arithmetic: the logits, the softmax and both products accumulate in float32 for float32/float16/bfloat16
data (float64 for float64 data); the output is rounded once to the input dtype.

Registered as ``torch.ops.genkernels.attention`` (returns ``(out, lse)``, lse float32/64 [B, H, Lq]) with
a fake implementation and autograd; the backward is its own op, ``torch.ops.genkernels.attention_backward``
(FlashAttention-2 style: P recomputed from the saved lse, no Lq x Lk matrix either). Token layout is
handled by strides inside the kernels: no transposes. Double backward goes through the differentiable
reference.

Backends: ``cpu`` (csrc/cpu/kernels/attention.cpp), ``triton`` (genkernels/triton/attention.py),
``cuda`` (csrc/cuda/attention.cu forward, csrc/cuda/attention_bwd.cu backward), ``reference`` (below).
Argument order of the kernels: csrc/common/attention_args.h. On a GPU, ``auto`` picks ``triton`` before
``cuda`` for this op: its tl.dot runs on tensor cores, while the CUDA kernels are a scalar
one-thread-per-row baseline (the GPU benchmark times both); float64 goes to ``cuda`` (``gpu_order``).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from ..backend import current_backend, resolve
from ._common import Op, acc_dtype, as_float, check_tensor, launch
from ._kernels import AttentionBwd, AttentionFwd

Tensor = torch.Tensor
OP = "attention"
GPU_ORDER = ("triton", "cuda")  # auto on a GPU: tensor-core Triton first (see above)


def gpu_order(dtype: torch.dtype) -> Tuple[str, ...]:
    """auto's candidates on a GPU for `dtype`: the Triton kernels keep a float32 softmax state and
    refuse float64, which goes to the CUDA kernels (double accumulation). Every head dim 1..256 compiles
    for sm_90 within its shared memory on both (tests/triton_sm90_build.py)."""
    return ("cuda",) if dtype == torch.float64 else GPU_ORDER
_REF_CHUNK_ELEMS = 1 << 24  # the reference's logits chunk: at most 16M elements alive


# ----------------------------------------------------------------------------------- layout helpers
def _heads_view(t: Tensor, heads: int) -> Tensor:
    """[B, L, H*d] -> [B, H, L, d] view (heads > 0); [B, H, L, d] unchanged."""
    if heads == 0:
        return t
    B, L, HD = t.shape
    return t.view(B, L, heads, HD // heads).transpose(1, 2)


def _kernel_view(t: Tensor, heads: int) -> Tuple[Tensor, Tuple[int, int, int]]:
    """(t with a unit-stride last dim — copied only when needed —, the element strides (batch, head,
    row) of its [B, H, L, d] view): _heads_view's strides, without building the view."""
    s = t.stride()
    if s[-1] != 1 or (heads and t.shape[-1] > 0 and s[-2] < t.shape[-1]):
        t = t.contiguous()
        s = t.stride()
    if heads:  # [B, L, H*d] viewed as [B, L, H, d] (strides s0, s1, d, 1), then L and H swapped
        return t, (s[0], t.shape[-1] // heads, s[1])
    return t, s[:3]


# ----------------------------------------------------------------------------------- reference
def _unread_padding(t: Tensor, mask: Optional[Tensor]) -> Tensor:
    """Keys/values [B, H, L, d] with the padding keys zeroed: a padding key is never read (its NaN
    or inf must not reach the output through 0 * NaN)."""
    return t if mask is None else t.masked_fill(mask[:, None, :, None], 0)


def _causal_fill(s: Tensor, r0: int) -> Tensor:
    """s [..., rows, Lk] of query rows r0.. with -inf where key j > query i."""
    i = torch.arange(r0, r0 + s.shape[-2], device=s.device)
    j = torch.arange(s.shape[-1], device=s.device)
    return s.masked_fill(j[None, :] > i[:, None], float("-inf"))


_BAND_ROWS = 64  # rows per block of _kept_matmul's causal decomposition


def _kept_matmul(a: Tensor, b: Tensor, is_causal: bool, first: int = 0, upper: bool = False) -> Tensor:
    """a @ b [..., M, N] summing only the pairs is_causal keeps: for row m the terms k <= m + first
    (upper: k >= m + first). A dropped pair is never multiplied, so NaN/inf in its operand (the v of a
    key hidden from a query, a query hidden from a key) cannot reach the result through 0 * NaN.
    Blocks of rows: the keys every row keeps by matmul, the partly kept ones elementwise, the rest not."""
    if not is_causal:
        return torch.matmul(a, b)
    M, K = a.shape[-2], a.shape[-1]
    if M == 0:
        return torch.matmul(a, b)

    def at(i):
        return min(max(i, 0), K)

    parts = []
    for m0 in range(0, M, _BAND_ROWS):
        m1 = min(M, m0 + _BAND_ROWS)
        if upper:  # every row keeps k >= m1 - 1 + first; [m0 + first, m1 - 1 + first) partly
            (f0, f1), (d0, d1) = (at(m1 - 1 + first), K), (at(m0 + first), at(m1 - 1 + first))
        else:      # every row keeps k <= m0 + first; (m0 + first, m1 - 1 + first] partly
            (f0, f1), (d0, d1) = (0, at(m0 + first + 1)), (at(m0 + first + 1), at(m1 + first))
        r = torch.matmul(a[..., m0:m1, f0:f1], b[..., f0:f1, :])
        if d1 > d0:
            rows = torch.arange(m0 + first, m1 + first, device=a.device)[:, None]
            ks = torch.arange(d0, d1, device=a.device)[None, :]
            keep = (ks >= rows) if upper else (ks <= rows)
            prod = a[..., m0:m1, d0:d1, None] * b[..., None, d0:d1, :]
            r = r + torch.where(keep[..., None], prod, torch.zeros((), dtype=prod.dtype, device=prod.device)).sum(-2)
        parts.append(r)
    return torch.cat(parts, -2)


def _causal_keep(Lq: int, Lk: int, device) -> Tensor:
    """[Lq, Lk] True where query i sees key j (j <= i)."""
    return torch.arange(Lk, device=device)[None, :] <= torch.arange(Lq, device=device)[:, None]


def reference_forward(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor], scale: float,
                      heads: int, is_causal: bool = False) -> Tuple[Tensor, Tensor]:
    """Eager PyTorch in the accumulation dtype, chunked over Lq; differentiable. (out, lse)."""
    acc = acc_dtype(q.dtype)
    qh, kh, vh = (_heads_view(t, heads).to(acc) for t in (q, k, v))
    vh = _unread_padding(vh, mask)
    B, H, Lq, d = qh.shape
    Lk = kh.shape[2]
    outs, lses = [], []
    rows = max(1, _REF_CHUNK_ELEMS // max(1, B * H * Lk))
    for r0 in range(0, max(Lq, 1), rows):
        s = torch.matmul(qh[:, :, r0:r0 + rows], kh.transpose(-1, -2)) * scale
        if mask is not None:
            s = s.masked_fill(mask[:, None, None, :], float("-inf"))
        if is_causal:
            s = _causal_fill(s, r0)
        lse = torch.logsumexp(s, dim=-1)
        live = lse != float("-inf")  # not fully masked (a NaN lse stays NaN: non-finite rule)
        p = torch.exp(s - torch.where(live, lse, torch.zeros_like(lse))[..., None])
        p = torch.where(live[..., None], p, torch.zeros_like(p))
        outs.append(_kept_matmul(p, vh, is_causal, r0))
        lses.append(lse)
    out = torch.cat(outs, 2)[:, :, :Lq] if Lq else qh.new_zeros((B, H, 0, vh.shape[-1]))
    lse = torch.cat(lses, 2)[:, :, :Lq] if Lq else qh.new_zeros((B, H, 0))
    out = out.to(q.dtype)
    if heads:
        out = out.transpose(1, 2).reshape(B, Lq, H * d)
    return out, lse


def _reference_backward(dout, q, k, v, mask, scale, heads, is_causal=False):
    """Analytic gradients (no autograd: this runs inside a custom op), in the accumulation dtype."""
    acc = acc_dtype(q.dtype)
    qh, kh, vh, gh = (_heads_view(t, heads).to(acc) for t in (q, k, v, dout))
    kh, vh = _unread_padding(kh, mask), _unread_padding(vh, mask)
    s = torch.matmul(qh, kh.transpose(-1, -2)) * scale
    if mask is not None:
        s = s.masked_fill(mask[:, None, None, :], float("-inf"))
    if is_causal:
        s = _causal_fill(s, 0)
    lse = torch.logsumexp(s, dim=-1, keepdim=True)
    live = lse != float("-inf")
    p = torch.where(live, torch.exp(s - torch.where(live, lse, torch.zeros_like(lse))), torch.zeros_like(s))
    # hidden pairs (causal) and padding keys contribute nothing (non-finite rule: never 0 * NaN)
    dv = _kept_matmul(p.transpose(-1, -2), gh, is_causal, upper=True)
    dp = torch.matmul(gh, vh.transpose(-1, -2))
    if is_causal:
        dp = dp.masked_fill(~_causal_keep(dp.shape[-2], dp.shape[-1], dp.device), 0)
    ds = p * (dp - (p * dp).sum(-1, keepdim=True))
    dq = _kept_matmul(ds, kh, is_causal) * scale
    dk = _kept_matmul(ds.transpose(-1, -2), qh, is_causal, upper=True) * scale
    if mask is not None:
        dk, dv = _unread_padding(dk, mask), _unread_padding(dv, mask)

    def back(g, like):
        if heads:
            g = g.transpose(1, 2).reshape(like.shape)
        return g.to(like.dtype).contiguous()

    return back(dq, q), back(dk, k), back(dv, v)


# ----------------------------------------------------------------------------------- dispatch
def _dims(q, k, heads):
    if heads:
        B, Lq, HD = q.shape
        return B, heads, Lq, k.shape[1], HD // heads
    B, H, Lq, d = q.shape
    return B, H, Lq, k.shape[2], d


def _mask_u8(mask):
    return None if mask is None else mask.contiguous().view(torch.uint8)


def attention_forward(backend: str, q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor], scale: float,
                      heads: int, is_causal: bool = False) -> Tuple[Tensor, Tensor]:
    if backend == "reference":
        return reference_forward(q, k, v, mask, scale, heads, is_causal)
    B, H, Lq, Lk, D = _dims(q, k, heads)
    acc = acc_dtype(q.dtype)
    device = q.device
    out = torch.empty(q.shape, dtype=q.dtype, device=device)
    lse = torch.empty((B, H, Lq), dtype=acc, device=device)
    if out.numel() == 0:
        return out, lse.fill_(float("-inf"))
    (q, (q_sb, q_sh, q_sl)), (k, (k_sb, k_sh, k_sl)) = _kernel_view(q, heads), _kernel_view(k, heads)
    (v, (v_sb, v_sh, v_sl)), (out, (o_sb, o_sh, o_sl)) = _kernel_view(v, heads), _kernel_view(out, heads)
    key_padding_mask, causal, scale = _mask_u8(mask), int(is_causal), float(scale)
    # positional, from variables named as AttentionFwd's fields (tests/test_native_args.py)
    launch(backend, AttentionFwd(q, k, v, key_padding_mask, out, lse, B, H, Lq, Lk, D, q_sb, q_sh, q_sl, k_sb, k_sh,
                                 k_sl, v_sb, v_sh, v_sl, o_sb, o_sh, o_sl, causal, scale), q.dtype)
    return out, lse


def attention_backward(backend: str, dout, q, k, v, out, lse, mask, scale, heads, is_causal=False):
    if backend == "reference":
        return _reference_backward(dout, q, k, v, mask, scale, heads, is_causal)
    B, H, Lq, Lk, D = _dims(q, k, heads)
    q, k, v, out = (t.contiguous() for t in (q, k, v, out))
    dout = dout.to(q.dtype).contiguous()
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    if dq.numel() == 0 or dk.numel() == 0:
        return dq.zero_(), dk.zero_(), dv.zero_()
    (q, (q_sb, q_sh, q_sl)), (k, (k_sb, k_sh, k_sl)) = _kernel_view(q, heads), _kernel_view(k, heads)
    (v, (v_sb, v_sh, v_sl)), (out, (o_sb, o_sh, o_sl)) = _kernel_view(v, heads), _kernel_view(out, heads)
    key_padding_mask, lse, causal, scale = _mask_u8(mask), lse.contiguous(), int(is_causal), float(scale)
    # positional, from variables named as AttentionBwd's fields (tests/test_native_args.py)
    launch(backend, AttentionBwd(q, k, v, key_padding_mask, out, dout, lse, dq, dk, dv, B, H, Lq, Lk, D, q_sb, q_sh,
                                 q_sl, k_sb, k_sh, k_sl, v_sb, v_sh, v_sl, o_sb, o_sh, o_sl, causal, scale), q.dtype)
    return dq, dk, dv


# ----------------------------------------------------------------------------------- registration
@torch.library.custom_op("genkernels::attention", mutates_args=())
def attention_op(q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Optional[Tensor], scale: float,
                 heads: int, is_causal: bool = False) -> Tuple[Tensor, Tensor]:
    """(out, lse); heads > 0: token layout [B, L, H*d]."""
    check_args(q, k, v, key_padding_mask, scale, heads, is_causal)
    return _forward(q, k, v, key_padding_mask, scale, heads, is_causal)


def _backend(q, *_):
    """The backend the registered op runs on for these arguments."""
    return resolve(OP, q, gpu_order(q.dtype))


def _forward(q, k, v, key_padding_mask, scale, heads, is_causal=False):
    """The registered op's implementation, without the argument checks."""
    return attention_forward(_backend(q), q, k, v, key_padding_mask, scale, heads, is_causal)


@attention_op.register_fake
def _(q, k, v, key_padding_mask, scale, heads, is_causal=False):
    check_args(q, k, v, key_padding_mask, scale, heads, is_causal)
    if heads:
        B, Lq = q.shape[0], q.shape[1]
        H = heads
    else:
        B, H, Lq = q.shape[0], q.shape[1], q.shape[2]
    return q.new_empty(q.shape), q.new_empty((B, H, Lq), dtype=acc_dtype(q.dtype))


@torch.library.custom_op("genkernels::attention_backward", mutates_args=())
def attention_backward_op(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                          key_padding_mask: Optional[Tensor], scale: float, heads: int, backend: str,
                          is_causal: bool = False) -> Tuple[Tensor, Tensor, Tensor]:
    """(dq, dk, dv); `backend`: the one the forward ran on ("auto": resolve now)."""
    check_backward_args(dout, q, k, v, out, lse, key_padding_mask, scale, heads, backend, is_causal)
    return _backward_impl(dout, q, k, v, out, lse, key_padding_mask, scale, heads, backend, is_causal)


def _backward_backend(dout, q, k, v, out, lse, key_padding_mask, scale, heads, backend, *_):
    """The backend attention_backward_op runs on: `backend` (the forward's), "auto" resolved now."""
    return resolve(OP, q, gpu_order(q.dtype), name=backend)


def _backward_impl(dout, q, k, v, out, lse, key_padding_mask, scale, heads, backend, is_causal=False):
    """attention_backward_op's implementation, without the argument checks."""
    backend = _backward_backend(dout, q, k, v, out, lse, key_padding_mask, scale, heads, backend)
    dq, dk, dv = attention_backward(backend, dout, q, k, v, out, lse, key_padding_mask, scale, heads, is_causal)
    return dq.contiguous(), dk.contiguous(), dv.contiguous()


def check_backward_args(dout, q, k, v, out, lse, key_padding_mask, scale, heads, backend, is_causal=False):
    """The registered backward's arguments (callable directly through torch.ops.genkernels)."""
    check_args(q, k, v, key_padding_mask, scale, heads, is_causal)
    B, H, Lq, _, _ = _dims(q, k, heads)
    for name, t in (("dout", dout), ("out", out)):
        check_tensor(OP, name, t, dtypes=_DTYPES)
        if t.shape != q.shape or t.device != q.device:
            raise ValueError(f"{OP}: `{name}` must match `q` {tuple(q.shape)} on {q.device}, got {tuple(t.shape)}")
    check_tensor(OP, "lse", lse, dtypes=(acc_dtype(q.dtype),))
    if tuple(lse.shape) != (B, H, Lq) or lse.device != q.device:
        raise ValueError(f"{OP}: `lse` must be [B, H, Lq] = {(B, H, Lq)} on {q.device}, got {tuple(lse.shape)}")


@attention_backward_op.register_fake
def _(dout, q, k, v, out, lse, key_padding_mask, scale, heads, backend, is_causal=False):
    check_backward_args(dout, q, k, v, out, lse, key_padding_mask, scale, heads, backend, is_causal)
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output):
    q, k, v, mask, scale, heads, is_causal = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, mask, out, lse)
    ctx.scale, ctx.heads, ctx.is_causal = scale, heads, is_causal
    ctx.backend = current_backend()
    ctx.mark_non_differentiable(lse)


def _backward(ctx, dout, _dlse):
    q, k, v, mask, out, lse = ctx.saved_tensors
    if torch.is_grad_enabled():  # double backward: through the differentiable reference
        dq, dk, dv = _reference_backward_graph(dout, q, k, v, mask, ctx.scale, ctx.heads, ctx.is_causal)
    else:
        dq, dk, dv = _run_backward(dout, q, k, v, out, lse, mask, ctx.scale, ctx.heads, ctx.backend, ctx.is_causal)
    n = ctx.needs_input_grad
    return (dq if n[0] else None, dk if n[1] else None, dv if n[2] else None, None, None, None, None)


def _reference_backward_graph(dout, q, k, v, mask, scale, heads, is_causal):
    out, _ = reference_forward(q, k, v, mask, scale, heads, is_causal)
    return torch.autograd.grad(out, (q, k, v), dout.to(out.dtype), create_graph=True, allow_unused=True)


# ----------------------------------------------------------------------------------- public API
_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def check_args(q, k, v, key_padding_mask, scale, heads, is_causal=False):
    """The registered op's arguments (heads 0: the [B, H, L, d] layout): raises a ValueError/TypeError
    naming the bad one."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(OP, name, t, dtypes=_DTYPES)
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 0:
        raise ValueError(f"{OP}: `heads` must be a positive int, got {heads!r}")
    if heads:
        for name, t in (("q", q), ("k", k), ("v", v)):
            if t.dim() != 3:
                raise ValueError(f"{OP}: with `heads`, `{name}` must be 3-D [B, L, H*d], got shape {tuple(t.shape)}")
            if t.shape[-1] % heads:
                raise ValueError(f"{OP}: `heads`={heads} must divide the last dim of `{name}` "
                                 f"({t.shape[-1]}), shape {tuple(t.shape)}")
        d = q.shape[-1] // heads
        B, Lk = q.shape[0], k.shape[1]
        if k.shape[0] != B or k.shape[2] != q.shape[2]:
            raise ValueError(f"{OP}: `k` must be [B, Lk, {q.shape[-1]}] like `q`, got {tuple(k.shape)}")
        if v.shape != k.shape:
            raise ValueError(f"{OP}: `v` must have the shape of `k` {tuple(k.shape)}, got {tuple(v.shape)}")
    else:
        for name, t in (("q", q), ("k", k), ("v", v)):
            if t.dim() != 4:
                raise ValueError(f"{OP}: `{name}` must be 4-D [B, H, L, d] (or pass `heads=` for the token "
                                 f"layout [B, L, H*d]), got shape {tuple(t.shape)}")
        B, H, Lq, d = q.shape
        kB, kH, Lk, kd = k.shape
        if (kB, kH, kd) != (B, H, d):
            raise ValueError(f"{OP}: `k` must be [{B}, {H}, Lk, {d}] to match `q` {tuple(q.shape)}, got {tuple(k.shape)}")
        if v.shape != k.shape:
            raise ValueError(f"{OP}: `v` must have the shape of `k` {tuple(k.shape)}, got {tuple(v.shape)}")
    if d == 0 or d > 256:
        raise ValueError(f"{OP}: head dim must be in 1..256, got {d}")
    if Lk == 0:
        raise ValueError(f"{OP}: `k`/`v` must have at least one key (Lk >= 1), got shape {tuple(k.shape)}")
    device = q.device
    for name, t in (("k", k), ("v", v)):
        if t.device != device:
            raise ValueError(f"{OP}: `{name}` is on {t.device} but `q` is on {device}")
        if t.dtype != q.dtype:
            raise TypeError(f"{OP}: `{name}` has dtype {t.dtype} but `q` has dtype {q.dtype}")
    if key_padding_mask is not None:
        if not isinstance(key_padding_mask, torch.Tensor):
            raise TypeError(f"{OP}: `key_padding_mask` must be a bool tensor, got {type(key_padding_mask).__name__}")
        if key_padding_mask.dtype != torch.bool:
            raise TypeError(f"{OP}: `key_padding_mask` must have dtype bool (True = padding), got "
                            f"{key_padding_mask.dtype}")
        if tuple(key_padding_mask.shape) != (B, Lk):
            raise ValueError(f"{OP}: `key_padding_mask` must have shape [B, Lk] = {(B, Lk)}, got "
                             f"{tuple(key_padding_mask.shape)}")
        if key_padding_mask.device != device:
            raise ValueError(f"{OP}: `key_padding_mask` is on {key_padding_mask.device} but `q` is on {device}")
    if not math.isfinite(scale):
        raise ValueError(f"{OP}: `scale` must be finite, got {scale}")
    if not isinstance(is_causal, bool):
        raise TypeError(f"{OP}: `is_causal` must be a bool, got {type(is_causal).__name__}")


_run = Op(OP, attention_op, check_args, _forward, reference_forward, _setup_context, _backward, _backend)
_run_backward = Op("attention_backward", attention_backward_op, check_backward_args, _backward_impl,
                   backend=_backward_backend)


def _public_args(q, scale, heads) -> Tuple[float, int]:
    """The public `scale` and `heads` as the registered op's: heads None -> 0 (the [B, H, L, d]
    layout); scale None -> 1/sqrt(d), where q's head dim d can be read (otherwise check_args refuses
    q or heads before it reads scale)."""
    if heads is None:
        heads = 0
    elif isinstance(heads, bool) or not isinstance(heads, int) or heads <= 0:
        raise ValueError(f"{OP}: `heads` must be a positive int, got {heads!r}")
    if scale is not None:
        return as_float(OP, "scale", scale), heads
    d = 0
    if isinstance(q, torch.Tensor) and q.dim() == (3 if heads else 4):
        d = q.shape[-1] // heads if heads else q.shape[-1]
    return (1.0 / math.sqrt(d) if d > 0 else 1.0), heads


def attention(q: Tensor, k: Tensor, v: Tensor, scale: Optional[float] = None,
              key_padding_mask: Optional[Tensor] = None, *, heads: Optional[int] = None,
              is_causal: bool = False) -> Tensor:
    """softmax(q kᵀ · scale) v. q [B, H, Lq, d], k/v [B, H, Lk, d]; or with `heads=H` the token layout
    q [B, Lq, H*d], k/v [B, Lk, H*d] (output in the input's layout). scale: 1/sqrt(d) by default.
    key_padding_mask: bool [B, Lk], True = ignore that key; a fully masked row gives zeros.
    is_causal: query i sees keys j <= i (top-left aligned, as torch SDPA)."""
    scale, heads = _public_args(q, scale, heads)
    return _run(q, k, v, key_padding_mask, scale, heads, is_causal)[0]


def attention_reference(q: Tensor, k: Tensor, v: Tensor, scale: Optional[float] = None,
                        key_padding_mask: Optional[Tensor] = None, *, heads: Optional[int] = None,
                        is_causal: bool = False) -> Tensor:
    """The eager-PyTorch specification of attention (differentiable to any order)."""
    scale, heads = _public_args(q, scale, heads)
    check_args(q, k, v, key_padding_mask, scale, heads, is_causal)
    return reference_forward(q, k, v, key_padding_mask, scale, heads, is_causal)[0]
