"""ddim_step / ddpm_step: one reverse-diffusion update, fused with classifier-free guidance.

    prev, x0 = genkernels.ddim_step(x_t, eps, alphas_cumprod[t], alphas_cumprod[t_prev])
    prev, x0 = genkernels.ddim_step(x_t, unet_out_2n, a_t, a_prev, guidance_scale=7.5)  # [uncond; cond]
    prev, x0 = genkernels.ddim_step(x_t, eps, a_t, a_prev, eta=1.0, noise=z)             # stochastic DDIM
    prev, x0 = genkernels.ddpm_step(x_t, eps, a_t, a_prev, noise=z)                      # DDPM ancestral

Numerically diffusers' ``DDIMScheduler.step`` / ``DDPMScheduler.step`` (prediction types epsilon,
sample, v_prediction; x0 clipping; ``use_clipped_model_output``; eta-scaled variance; DDPM
"fixed_small" / "fixed_large" variance), computed in one pass: each input is read once, each output
written once, one kernel launch per step. Alphas are Python floats (passed to the kernel as scalars:
no tensor is created, nothing is copied to the device) or float32/float64 tensors of shape [N] (per-sample
timesteps) or [] on the data's device, read by the kernel itself (no host synchronisation).

Domain: ``0 <= alpha_prod_t < 1``, ``0 < alpha_prod_t_prev <= 1``, ``alpha_prod_t <= alpha_prod_t_prev``
(cumulative products fall with t), ``alpha_prod_t > 0`` for ``prediction_type="epsilon"`` (x0 divides by
its square root), and for DDIM with ``eta > 0`` a non-negative ``1 - alpha_prod_t_prev - sigma_t^2``.
Python-float alphas outside it raise ``ValueError``. Tensor alphas are not read on the host (that would
synchronise): a sample whose alphas are outside the domain gets NaN in both outputs (and its
gradients), on every backend.

Noise: unlike diffusers, the op never draws from the global RNG on its own. With ``eta > 0``
(``ddim_step``) pass ``noise`` (shape of ``sample``) or a ``generator=`` from which it is drawn with
``torch.randn``. ``ddpm_step`` without noise and generator adds no noise (diffusers' last step, t = 0).

Registered as ``torch.ops.genkernels.ddim_step`` (both updates; ``kind`` picks) with a fake
implementation and autograd w.r.t. sample, model_output and noise (the update is linear in them,
piecewise where x0 is clipped; with guidance the model_output gradient splits into its halves).
Non-finite input: each output is computed from exactly the inputs the formula above uses for it (x0 of
``prediction_type="sample"`` never reads sample; no noise term at eta = 0), so NaN/inf reach an output
where, and as, they do in the reference. Kernels: csrc/cpu/kernels/ddim.cpp, csrc/cuda/ddim.cu, genkernels/triton/ddim.py; the shared
coefficient algebra and argument order are in csrc/common/ddim_args.h.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from .. import _native
from ..backend import resolve
from ._common import FLOAT_DTYPES, Op, acc_dtype, as_float, dense_layout, empty_out, launch, to_layout
from ._kernels import DDIMStep

Tensor = torch.Tensor
OP = "ddim_step"
PREDICTION_TYPES = {"epsilon": 0, "sample": 1, "v_prediction": 2}
_PREDICTION_CODES = frozenset(PREDICTION_TYPES.values())
KIND_DDIM, KIND_DDPM_SMALL, KIND_DDPM_LARGE = 0, 1, 2
# diffusers' fixed_small_log is exp(0.5 * log(var)) = sqrt(var): the same update as fixed_small.
DDPM_VARIANCE_TYPES = {"fixed_small": KIND_DDPM_SMALL, "fixed_small_log": KIND_DDPM_SMALL,
                       "fixed_large": KIND_DDPM_LARGE}
_ALPHA_DTYPES = (torch.float32, torch.float64)


# ----------------------------------------------------------------------------------- coefficients
def _sqrt(v):
    return v.sqrt() if isinstance(v, Tensor) else math.sqrt(v) if v >= 0 else float("nan")


def _clamp_min(v, lo):
    return v.clamp(min=lo) if isinstance(v, Tensor) else (v if (v != v or v >= lo) else lo)


def in_domain(a_t, a_p, pred: int):
    """The alphas' domain (module docstring): a bool for floats, a bool tensor when either is a tensor."""
    ok = (a_t >= 0) & (a_t < 1) & (a_p > 0) & (a_p <= 1) & (a_t <= a_p)
    return ok & (a_t > 0) if pred == 0 else ok


def nan_outside(t, ok):
    """t where the alphas are in the domain, NaN elsewhere (ok: in_domain's result)."""
    if not isinstance(ok, Tensor):
        return t
    if not isinstance(t, Tensor):
        t = torch.tensor(float(t), dtype=torch.float64, device=ok.device)
    return torch.where(ok, t, torch.full((), float("nan"), dtype=t.dtype, device=t.device))


def step_coefficients(kind: int, pred: int, use_clipped: bool, has_noise: bool, a_t, a_p, eta: float):
    """(A, B, G, H, K, S) of  x0 = clip(A x + B m),  prev = G x0 + H x + K y + S z, y = x0 for DDIM with
    use_clipped, else m (ddim_args.h's step_coef; NaN outside the domain). a_t, a_p: floats or tensors
    (any broadcastable shape)."""
    b_t = 1 - a_t
    sa, sb, sp = _sqrt(a_t), _sqrt(b_t), _sqrt(a_p)
    if pred == 0:
        A, B, C, D = 1 / sa, -sb / sa, 0.0, 1.0
    elif pred == 1:
        A, B, C, D = 0.0, 1.0, 1 / sb, -sa / sb
    else:
        A, B, C, D = sa, -sb, sb, sa
    if kind == KIND_DDIM:
        var = (1 - a_p) / b_t * (1 - a_t / a_p)
        std = eta * _sqrt(var)
        Q = _sqrt(1 - a_p - std * std)
        if use_clipped:
            G, H, K = sp, Q / sb, -Q * sa / sb
        else:
            G, H, K = sp, Q * C, Q * D
        S = std if has_noise else 0.0
    else:
        cur_alpha = a_t / a_p
        cur_beta = 1 - cur_alpha
        G = sp * cur_beta / b_t
        H = _sqrt(cur_alpha) * (1 - a_p) / b_t
        K = 0.0
        var = _clamp_min((1 - a_p) / b_t * cur_beta, 1e-20) if kind == KIND_DDPM_SMALL else cur_beta
        S = _sqrt(var) if has_noise else 0.0
    ok = in_domain(a_t, a_p, pred)
    return tuple(nan_outside(c, ok) for c in (A, B, G, H, K, S))


# ----------------------------------------------------------------------------------- reference
def _per_sample(a, like: Tensor):
    """A float stays a float; a tensor alpha [N] / [] becomes [N, 1, ...] in like's dtype."""
    if not isinstance(a, Tensor):
        return a
    a = a.to(like.dtype)
    return a.reshape(a.shape + (1,) * (like.dim() - a.dim())) if a.dim() else a


def _guided(mo: Tensor, guidance_scale: Optional[float]) -> Tensor:
    if guidance_scale is None:
        return mo
    mu, mc = mo.chunk(2)
    return mu + guidance_scale * (mc - mu)


def reference_forward(sample, model_output, noise, alpha_t, alpha_prev, eta, guidance_scale, clip_range,
                      pred, use_clipped, kind) -> Tuple[Tensor, Tensor]:
    """Eager PyTorch in the accumulation dtype, written as diffusers writes it: the spec."""
    acc = acc_dtype(sample.dtype)
    x = sample.to(acc)
    m = _guided(model_output.to(acc), guidance_scale)
    a_t, a_p = _per_sample(alpha_t, x), _per_sample(alpha_prev, x)
    b_t = 1 - a_t
    if pred == 0:
        x0 = (x - b_t ** 0.5 * m) / a_t ** 0.5
        eps = m
    elif pred == 1:
        x0 = m
        eps = (x - a_t ** 0.5 * x0) / b_t ** 0.5
    else:
        x0 = a_t ** 0.5 * x - b_t ** 0.5 * m
        eps = a_t ** 0.5 * m + b_t ** 0.5 * x
    if clip_range is not None:
        x0 = x0.clamp(-clip_range, clip_range)
    if kind == KIND_DDIM:
        var = (1 - a_p) / b_t * (1 - a_t / a_p)
        std = eta * var ** 0.5
        if use_clipped:
            eps = (x - a_t ** 0.5 * x0) / b_t ** 0.5
        prev = a_p ** 0.5 * x0 + (1 - a_p - std ** 2) ** 0.5 * eps
        if noise is not None and eta > 0:
            prev = prev + std * noise.to(acc)
    else:
        cur_alpha = a_t / a_p
        cur_beta = 1 - cur_alpha
        prev = (a_p ** 0.5 * cur_beta) / b_t * x0 + cur_alpha ** 0.5 * (1 - a_p) / b_t * x
        if noise is not None:
            if kind == KIND_DDPM_SMALL:
                var = (1 - a_p) / b_t * cur_beta
                var = var.clamp(min=1e-20) if isinstance(var, Tensor) else max(var, 1e-20)
            else:
                var = cur_beta
            prev = prev + var ** 0.5 * noise.to(acc)
    ok = in_domain(a_t, a_p, pred)
    return nan_outside(prev, ok).to(sample.dtype), nan_outside(x0, ok).to(sample.dtype)


# ----------------------------------------------------------------------------------- backends
def _forward(sample, model_output, noise, alpha_t, alpha_prev, alpha_t_value, alpha_prev_value, eta, guidance_scale,
             clip_range, prediction_type, use_clipped, kind):
    """The registered op's implementation, without the argument checks: (prev_sample,
    pred_original_sample) on the op's backend (`_backend`), both in sample's memory format. A tensor
    alpha ([N] or [], float32/float64, sample's device) overrides its *_value."""
    backend = _backend(sample, kind)
    x, cl = dense_layout(sample)
    # x is densely packed: its strides are empty_out(sample)'s (what the fake returns)
    prev_sample, pred_original_sample = torch.empty_like(x), torch.empty_like(x)
    if x.numel() == 0:
        return prev_sample, pred_original_sample
    if backend == "reference":
        p, o = _reference(sample, model_output, noise, alpha_t, alpha_prev, alpha_t_value, alpha_prev_value, eta,
                          guidance_scale, clip_range, prediction_type, use_clipped, kind)
        return prev_sample.copy_(p), pred_original_sample.copy_(o)
    sample = x
    N = sample.shape[0]
    L = sample.numel() // N
    model_output = to_layout(model_output, cl)
    # DDIM at eta = 0 adds no noise (the reference reads none: 0 * NaN must not reach prev)
    noise = None if noise is None or (kind == KIND_DDIM and eta == 0) else to_layout(noise, cl)
    # a tensor alpha is read by the kernel (dtype code, per-sample flag); a float travels as a scalar
    alpha_t_dtype = alpha_prev_dtype = -1
    alpha_t_stride = alpha_prev_stride = 0
    if alpha_t is not None:
        alpha_t = alpha_t.contiguous()
        alpha_t_dtype, alpha_t_stride, alpha_t_value = _native.DTYPE_CODES[alpha_t.dtype], int(alpha_t.numel() > 1), 0.0
    if alpha_prev is not None:
        alpha_prev = alpha_prev.contiguous()
        alpha_prev_dtype, alpha_prev_stride, alpha_prev_value = \
            _native.DTYPE_CODES[alpha_prev.dtype], int(alpha_prev.numel() > 1), 0.0
    clip, guidance, use_clipped_model_output = int(clip_range is not None), int(guidance_scale is not None), \
        int(use_clipped)
    if clip_range is None:
        clip_range = 0.0
    if guidance_scale is None:
        guidance_scale = 0.0
    # positional (a call of more than 15 keywords builds a dict): the names are DDIMStep's fields in
    # order, which tests/test_native_args.py checks
    launch(backend, DDIMStep(sample, model_output, noise, alpha_t, alpha_prev, prev_sample, pred_original_sample,
                             N, L, kind, prediction_type, clip, use_clipped_model_output, guidance, alpha_t_dtype,
                             alpha_prev_dtype, alpha_t_stride, alpha_prev_stride, alpha_t_value, alpha_prev_value,
                             eta, guidance_scale, clip_range), sample.dtype)
    return prev_sample, pred_original_sample


# ----------------------------------------------------------------------------------- registration
@torch.library.custom_op("genkernels::ddim_step", mutates_args=())
def ddim_step_op(sample: Tensor, model_output: Tensor, noise: Optional[Tensor], alpha_t: Optional[Tensor],
                 alpha_prev: Optional[Tensor], alpha_t_value: float, alpha_prev_value: float, eta: float,
                 guidance_scale: Optional[float], clip_sample_range: Optional[float], prediction_type: int,
                 use_clipped_model_output: bool, kind: int) -> Tuple[Tensor, Tensor]:
    """kind: 0 DDIM, 1 DDPM fixed_small, 2 DDPM fixed_large. A tensor alpha overrides its *_value."""
    check_args(sample, model_output, noise, alpha_t, alpha_prev, alpha_t_value, alpha_prev_value, eta,
               guidance_scale, clip_sample_range, prediction_type, use_clipped_model_output, kind)
    return _forward(sample, model_output, noise, alpha_t, alpha_prev, alpha_t_value, alpha_prev_value, eta,
                    guidance_scale, clip_sample_range, prediction_type, use_clipped_model_output, kind)


def _backend(sample, *rest):
    """The backend the registered op runs on for these arguments (the last is `kind`)."""
    return resolve("ddpm_step" if rest[-1] else OP, sample)


def _reference(sample, model_output, noise, alpha_t, alpha_prev, alpha_t_value, alpha_prev_value, eta,
               guidance_scale, clip_sample_range, prediction_type, use_clipped_model_output, kind):
    return reference_forward(sample, model_output, noise, alpha_t_value if alpha_t is None else alpha_t,
                             alpha_prev_value if alpha_prev is None else alpha_prev, eta, guidance_scale,
                             clip_sample_range, prediction_type, use_clipped_model_output, kind)


@ddim_step_op.register_fake
def _(sample, model_output, noise, alpha_t, alpha_prev, alpha_t_value, alpha_prev_value, eta, guidance_scale,
      clip_sample_range, prediction_type, use_clipped_model_output, kind):
    check_args(sample, model_output, noise, alpha_t, alpha_prev, alpha_t_value, alpha_prev_value, eta,
               guidance_scale, clip_sample_range, prediction_type, use_clipped_model_output, kind)
    return empty_out(sample), empty_out(sample)


def _setup_context(ctx, inputs, output):
    (sample, model_output, noise, alpha_t, alpha_prev, at_v, ap_v, eta, gs, clip, pred, use_clipped,
     kind) = inputs
    clipping = clip is not None
    ctx.save_for_backward(sample if clipping else None, model_output if clipping else None, alpha_t, alpha_prev)
    ctx.args = (at_v, ap_v, eta, gs, clip, pred, use_clipped, kind, noise is not None)
    ctx.dtypes = (sample.dtype, model_output.dtype, None if noise is None else noise.dtype)


def _backward(ctx, g_prev, g_x0):
    sample, model_output, alpha_t, alpha_prev = ctx.saved_tensors
    at_v, ap_v, eta, gs, clip, pred, use_clipped, kind, has_noise = ctx.args
    ref = g_prev if g_prev is not None else g_x0
    acc = acc_dtype(ctx.dtypes[0])
    gp = torch.zeros_like(ref, dtype=acc) if g_prev is None else g_prev.to(acc)
    gx0 = torch.zeros_like(ref, dtype=acc) if g_x0 is None else g_x0.to(acc)
    a_t = at_v if alpha_t is None else _per_sample(alpha_t, gp)
    a_p = ap_v if alpha_prev is None else _per_sample(alpha_prev, gp)
    A, B, G, H, K, S = step_coefficients(kind, pred, use_clipped, has_noise, a_t, a_p, eta)
    y_x0 = kind == KIND_DDIM and use_clipped  # prev's K term reads x0, not m
    t = gx0 + (G + K if y_x0 else G) * gp
    if clip is not None:
        x = sample.to(acc)
        x0u = A * x + B * _guided(model_output.to(acc), gs)
        t = torch.where((x0u >= -clip) & (x0u <= clip), t, torch.zeros_like(t))
    gx = A * t + H * gp
    gm = B * t if y_x0 else B * t + K * gp
    if gs is not None:
        gm = torch.cat([(1 - gs) * gm, gs * gm])
    gz = S * gp if has_noise else None
    n = ctx.needs_input_grad
    sd, md, zd = ctx.dtypes
    return (gx.to(sd) if n[0] else None, gm.to(md) if n[1] else None,
            gz.to(zd) if (n[2] and gz is not None) else None) + (None,) * 10


# ----------------------------------------------------------------------------------- checks
def _check_alpha(op, name, tensor, value, sample):
    """An alpha as the registered op takes it: a tensor (overrides `value`) or None and a float."""
    if tensor is not None:
        if tensor.dtype not in _ALPHA_DTYPES:
            raise TypeError(f"{op}: `{name}` has dtype {tensor.dtype}; expected float32 or float64")
        if tensor.device != sample.device:
            raise ValueError(f"{op}: `{name}` is on {tensor.device} but `sample` is on {sample.device}")
        N = sample.shape[0]
        if not (tensor.dim() == 0 or (tensor.dim() == 1 and tensor.shape[0] in (N, 1))):
            raise ValueError(f"{op}: `{name}` must be a float or a tensor of shape [N]={[N]} (or [] / [1]), "
                             f"got shape {list(tensor.shape)}")
    elif not (0.0 <= value <= 1.0):
        raise ValueError(f"{op}: `{name}` must be a cumulative alpha product in [0, 1], got {value}")


def _check_tensor_arg(op, name, t, sample):
    """model_output / noise: a tensor of sample's dtype on its device."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{op}: `{name}` must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != sample.dtype:
        raise TypeError(f"{op}: `{name}` has dtype {t.dtype} but `sample` has {sample.dtype}")
    if t.device != sample.device:
        raise ValueError(f"{op}: `{name}` is on {t.device} but `sample` is on {sample.device}")


def check_args(sample, model_output, noise, alpha_t, alpha_prev, at_v, ap_v, eta, gs, clip, pred,
               use_clipped, kind):
    """The registered op's arguments (a ValueError/TypeError naming the bad one, as the public function
    that ran it: ddim_step for kind 0, ddpm_step otherwise)."""
    if kind not in (KIND_DDIM, KIND_DDPM_SMALL, KIND_DDPM_LARGE):
        raise ValueError(f"{OP}: `kind` must be 0 (DDIM), 1 or 2 (DDPM), got {kind!r}")
    op = OP if kind == KIND_DDIM else "ddpm_step"
    if pred not in _PREDICTION_CODES:
        raise ValueError(f"{op}: `prediction_type` must be one of {sorted(_PREDICTION_CODES)}, got {pred!r}")
    if not isinstance(sample, Tensor):
        raise TypeError(f"{op}: `sample` must be a torch.Tensor, got {type(sample).__name__}")
    if sample.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: `sample` has dtype {sample.dtype}; expected float32, float16, bfloat16 or float64")
    if sample.dim() < 1:
        raise ValueError(f"{op}: `sample` must have a batch dimension, got shape {tuple(sample.shape)}")
    _check_tensor_arg(op, "model_output", model_output, sample)
    if not (math.isfinite(eta) and (gs is None or math.isfinite(gs)) and (clip is None or math.isfinite(clip))):
        for name, v in (("guidance_scale", gs), ("clip_sample_range", clip), ("eta", eta)):
            if v is not None and not math.isfinite(v):
                raise ValueError(f"{op}: `{name}` must be finite, got {v}")
    want = sample.shape
    if gs is not None:
        want = (2 * want[0],) + tuple(want[1:])
    if model_output.shape != want:
        extra = " ([uncond; cond] batched, 2N rows, because guidance_scale is given)" if gs is not None else ""
        raise ValueError(f"{op}: `model_output` must have shape {want}{extra}, got {tuple(model_output.shape)}")
    if noise is not None:
        _check_tensor_arg(op, "noise", noise, sample)
        if noise.shape != sample.shape:
            raise ValueError(f"{op}: `noise` must have the shape of `sample` {tuple(sample.shape)}, "
                             f"got {tuple(noise.shape)}")
    if clip is not None and clip <= 0:
        raise ValueError(f"{op}: `clip_sample_range` must be positive (or None for no clipping), got {clip}")
    _check_alpha(op, "alpha_prod_t", alpha_t, at_v, sample)
    _check_alpha(op, "alpha_prod_t_prev", alpha_prev, ap_v, sample)
    floats = alpha_t is None and alpha_prev is None
    if alpha_t is None and at_v == 1.0:
        raise ValueError(f"{op}: `alpha_prod_t` must be < 1 (1 - alpha_prod_t divides), got {at_v}")
    if alpha_t is None and at_v == 0.0 and pred == PREDICTION_TYPES["epsilon"]:
        raise ValueError(f"{op}: `alpha_prod_t` must be > 0 for prediction_type='epsilon' (x0 divides by "
                         f"its square root), got {at_v}")
    if alpha_prev is None and ap_v == 0.0:
        raise ValueError(f"{op}: `alpha_prod_t_prev` must be > 0, got {ap_v}")
    if floats and at_v > ap_v:
        raise ValueError(f"{op}: `alpha_prod_t` ({at_v}) must be <= `alpha_prod_t_prev` ({ap_v}): cumulative "
                         "alpha products fall as t grows")
    if eta < 0:
        raise ValueError(f"{op}: `eta` must be >= 0, got {eta}")
    if eta > 0 and floats:  # 1 - a_prev - sigma_t^2 >= 0 (tensor alphas: NaN outputs, module docstring)
        var = (1 - ap_v) / (1 - at_v) * (1 - at_v / ap_v)
        if 1 - ap_v - eta * eta * var < 0:
            raise ValueError(f"{op}: `eta`={eta} is too large for alphas ({at_v}, {ap_v}): "
                             "1 - alpha_prod_t_prev - sigma_t^2 < 0")


_run = Op(OP, ddim_step_op, check_args, _forward, _reference, _setup_context, _backward, _backend)


# ----------------------------------------------------------------------------------- public API
def _alpha_arg(op, name, a):
    """A public alpha as the registered op's (tensor or None, float value)."""
    if type(a) is float:  # (the common case; isinstance(a, Tensor) is slow for non-tensors)
        return None, a
    if isinstance(a, Tensor):
        return a, 0.0
    return None, as_float(op, name, a)


def _public_args(op, alpha_t, alpha_prev, noise, prediction_type, guidance_scale, clip_sample_range, generator):
    """The arguments ddim_step and ddpm_step share, as the registered op takes them (their values are
    checked there): (alpha_t, alpha_prev, alpha_t_value, alpha_prev_value, guidance_scale,
    clip_sample_range, prediction_type code)."""
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"{op}: `prediction_type` must be one of {list(PREDICTION_TYPES)}, got {prediction_type!r}")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"{op}: `generator` must be a torch.Generator, got {type(generator).__name__}")
        if noise is not None:
            raise ValueError(f"{op}: pass either `noise` or `generator`, not both")
    (at_t, at_v), (ap_t, ap_v) = _alpha_arg(op, "alpha_prod_t", alpha_t), _alpha_arg(op, "alpha_prod_t_prev", alpha_prev)
    return (at_t, ap_t, at_v, ap_v, as_float(op, "guidance_scale", guidance_scale, allow_none=True),
            as_float(op, "clip_sample_range", clip_sample_range, allow_none=True), PREDICTION_TYPES[prediction_type])


def _drawn_noise(sample, generator):
    """Noise drawn for sample, None where sample is not a floating tensor (check_args refuses it)."""
    if isinstance(sample, Tensor) and sample.dtype in FLOAT_DTYPES:
        return draw_noise(sample, generator)
    return None


def draw_noise(sample: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    """torch.randn in sample's shape and dtype from `generator` (None: torch's default), as diffusers'
    randn_tensor for one generator: a CPU generator for device data draws on the CPU and copies; a
    generator of another device type is refused."""
    dev = sample.device
    if generator is not None and generator.device.type != dev.type:
        if generator.device.type != "cpu":
            raise ValueError(f"cannot draw {dev} noise from a {generator.device.type} generator")
        dev = torch.device("cpu")
    return torch.randn(sample.shape, generator=generator, device=dev, dtype=sample.dtype).to(sample.device)


def ddim_step(sample: Tensor, model_output: Tensor, alpha_prod_t, alpha_prod_t_prev, eta: float = 0.0,
              noise: Optional[Tensor] = None, *, prediction_type: str = "epsilon",
              guidance_scale: Optional[float] = None, clip_sample_range: Optional[float] = None,
              use_clipped_model_output: bool = False,
              generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
    """One DDIM update: ``(prev_sample, pred_original_sample)`` as diffusers' ``DDIMScheduler.step``.

    sample: x_t [N, ...], float32/float16/bfloat16/float64, contiguous or channels_last (outputs keep it).
    model_output: [N, ...], or [2N, ...] = [uncond; cond] with ``guidance_scale`` s, in which case the
        update uses ``m_u + s (m_c - m_u)``. Same dtype and device as sample.
    alpha_prod_t, alpha_prod_t_prev: floats (alphas_cumprod[t], alphas_cumprod[t_prev] or the final
        alpha) in the domain of the module docstring, or float32/float64 tensors [N] (per-sample
        timesteps) or [] on sample's device (a sample outside the domain gets NaN outputs).
    eta: >= 0; with eta > 0 the noise term eta * sigma_t * noise uses ``noise`` (sample's shape) or one
        drawn with ``torch.randn(generator=generator)``; one of the two is required.
    clip_sample_range: clip x0 to [-r, r] (diffusers' clip_sample=True); None: no clipping.
    use_clipped_model_output: re-derive eps from the clipped x0 (diffusers' flag of the same name).
    """
    at_t, ap_t, at_v, ap_v, gs, clip, pred = _public_args(OP, alpha_prod_t, alpha_prod_t_prev, noise, prediction_type,
                                                          guidance_scale, clip_sample_range, generator)
    eta = as_float(OP, "eta", eta)
    if not isinstance(use_clipped_model_output, bool):
        raise TypeError(f"{OP}: `use_clipped_model_output` must be a bool")
    if eta > 0 and noise is None:
        if generator is None:
            raise ValueError(f"{OP}: eta > 0 needs `noise` (a tensor of sample's shape) or a `generator` "
                             "to draw it from")
        noise = _drawn_noise(sample, generator)
    if eta == 0:
        noise = None  # diffusers adds no noise at eta = 0; do not read it
    return _run(sample, model_output, noise, at_t, ap_t, at_v, ap_v, eta, gs, clip, pred, use_clipped_model_output,
                KIND_DDIM)


def ddpm_step(sample: Tensor, model_output: Tensor, alpha_prod_t, alpha_prod_t_prev,
              noise: Optional[Tensor] = None, *, prediction_type: str = "epsilon",
              guidance_scale: Optional[float] = None, clip_sample_range: Optional[float] = None,
              variance_type: str = "fixed_small",
              generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
    """One DDPM ancestral update: ``(prev_sample, pred_original_sample)`` as diffusers' ``DDPMScheduler.step``.

    Arguments as ``ddim_step``; alpha_prod_t_prev is alphas_cumprod[prev_t] (1.0 after the last step).
    variance_type: "fixed_small" (diffusers' default; "fixed_small_log" is the same update) or "fixed_large".
    Noise sigma_t * noise is added when ``noise`` or ``generator`` is given; diffusers adds none at t = 0.
    """
    at_t, ap_t, at_v, ap_v, gs, clip, pred = _public_args("ddpm_step", alpha_prod_t, alpha_prod_t_prev, noise,
                                                          prediction_type, guidance_scale, clip_sample_range,
                                                          generator)
    kind = _variance_kind(variance_type)
    if noise is None and generator is not None:
        noise = _drawn_noise(sample, generator)
    return _run(sample, model_output, noise, at_t, ap_t, at_v, ap_v, 0.0, gs, clip, pred, False, kind)


def _variance_kind(variance_type) -> int:
    if variance_type not in DDPM_VARIANCE_TYPES:
        raise ValueError(f"ddpm_step: `variance_type` must be one of {list(DDPM_VARIANCE_TYPES)} (learned "
                         f"variances are not supported), got {variance_type!r}")
    return DDPM_VARIANCE_TYPES[variance_type]


def ddim_step_reference(sample, model_output, alpha_prod_t, alpha_prod_t_prev, eta=0.0, noise=None, *,
                        prediction_type="epsilon", guidance_scale=None, clip_sample_range=None,
                        use_clipped_model_output=False):
    """The eager-PyTorch specification of ddim_step (differentiable; noise must be passed when eta > 0)."""
    at_t, ap_t, at_v, ap_v, gs, clip, pred = _public_args(OP, alpha_prod_t, alpha_prod_t_prev, noise, prediction_type,
                                                          guidance_scale, clip_sample_range, None)
    eta = as_float(OP, "eta", eta)
    check_args(sample, model_output, noise, at_t, ap_t, at_v, ap_v, eta, gs, clip, pred, use_clipped_model_output,
               KIND_DDIM)
    if eta > 0 and noise is None:
        raise ValueError(f"{OP}: eta > 0 needs `noise`")
    return reference_forward(sample, model_output, noise if eta > 0 else None,
                             at_v if at_t is None else at_t, ap_v if ap_t is None else ap_t, eta, gs, clip,
                             pred, use_clipped_model_output, KIND_DDIM)


def ddpm_step_reference(sample, model_output, alpha_prod_t, alpha_prod_t_prev, noise=None, *,
                        prediction_type="epsilon", guidance_scale=None, clip_sample_range=None,
                        variance_type="fixed_small"):
    """The eager-PyTorch specification of ddpm_step."""
    at_t, ap_t, at_v, ap_v, gs, clip, pred = _public_args("ddpm_step", alpha_prod_t, alpha_prod_t_prev, noise,
                                                          prediction_type, guidance_scale, clip_sample_range, None)
    kind = _variance_kind(variance_type)
    check_args(sample, model_output, noise, at_t, ap_t, at_v, ap_v, 0.0, gs, clip, pred, False, kind)
    return reference_forward(sample, model_output, noise, at_v if at_t is None else at_t,
                             ap_v if ap_t is None else ap_t, 0.0, gs, clip, pred, False, kind)
