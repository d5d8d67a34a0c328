"""ddim_step / ddpm_step and nn.DDIMScheduler / DDPMScheduler: every available backend against the
float64 reference, gradients, registration, compilation, argument errors, and full sampling loops
against diffusers' schedulers (constructed from config only: nothing is downloaded)."""
import itertools

import pytest
import torch

import genkernels
from genkernels.nn.scheduler import DDIMScheduler, DDPMScheduler
from genkernels.ops.ddim_step import (ddim_step, ddim_step_reference, ddpm_step, ddpm_step_reference)

from conftest import DEVICE, assert_close, compiled_backends



@pytest.fixture
def diffusers():
    """diffusers' schedulers, the reference of the sampling-loop tests (skipped where not installed)."""
    return pytest.importorskip("diffusers")


BACKENDS = ["reference"] + compiled_backends()
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def to_cl(x):
    return x.movedim(1, -1).contiguous().movedim(-1, 1) if x.dim() >= 3 else x


def make(shape, dtype, guidance, seed=0, channels_last=False):
    g = torch.Generator().manual_seed(seed)
    N = shape[0]
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    mo = torch.randn((2 * N if guidance else N,) + tuple(shape[1:]), generator=g, dtype=torch.float64) * 1.3
    z = torch.randn(shape, generator=g, dtype=torch.float64)
    out = [t.to(DEVICE, dtype) for t in (x, mo, z)]
    return [to_cl(t) for t in out] if channels_last else out


def alphas(N, tensor, dtype=torch.float64):
    if not tensor:
        return 0.31, 0.62
    at = torch.linspace(0.05, 0.9, N, dtype=torch.float64)
    ap = torch.clamp(at + 0.2, max=1.0)
    return at.to(DEVICE, dtype), ap.to(DEVICE, dtype)


def _d(t):
    return t.double() if isinstance(t, torch.Tensor) else t


# (prediction_type, guidance_scale, clip, eta, use_clipped, tensor alphas)
DDIM_CASES = [
    ("epsilon", None, None, 0.0, False, False),
    ("epsilon", 7.5, 1.0, 0.7, False, True),
    ("epsilon", None, 0.5, 1.0, True, False),
    ("sample", 3.0, None, 0.0, False, True),
    ("sample", None, 1.0, 0.7, True, True),
    ("v_prediction", None, None, 0.3, False, False),
    ("v_prediction", 2.0, 1.0, 0.0, True, True),
]
DDPM_CASES = [  # (prediction_type, guidance_scale, clip, noise, variance_type, tensor alphas)
    ("epsilon", None, 1.0, True, "fixed_small", False),
    ("sample", 4.0, None, True, "fixed_large", True),
    ("v_prediction", None, None, False, "fixed_small", True),
]
SHAPES = [(3, 4, 5, 6), (2, 3, 7), (1, 2, 3, 4, 5), (2, 5)]


def _shapes(backend):
    if backend == "triton" and DEVICE.type == "cpu":  # the interpreter is slow
        return [(3, 4, 5, 6), (2, 5)]
    return SHAPES


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "cl"])
def test_ddim_matches_reference(backend, dtype, channels_last):
    for shape, (pred, gs, clip, eta, uc, tens) in itertools.product(_shapes(backend), DDIM_CASES):
        x, mo, z = make(shape, dtype, gs is not None, channels_last=channels_last)
        at, ap = alphas(shape[0], tens, torch.float32 if dtype == torch.float16 else torch.float64)
        kw = dict(prediction_type=pred, guidance_scale=gs, clip_sample_range=clip, use_clipped_model_output=uc)
        want = ddim_step_reference(x.double(), mo.double(), _d(at), _d(ap), eta, z.double(), **kw)
        with genkernels.use_backend(backend):
            got = ddim_step(x, mo, at, ap, eta, z, **kw)
        for g, w, name in zip(got, want, ("prev_sample", "pred_original_sample")):
            assert g.dtype == dtype and g.shape == x.shape
            if channels_last and x.dim() >= 3 and not x.is_contiguous():
                assert not g.is_contiguous() and g.movedim(1, -1).is_contiguous(), "layout not kept"
            assert_close(g, w, dtype, scale=4, what=f"{backend} {shape} {pred} gs={gs} clip={clip} eta={eta} {name}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_ddpm_matches_reference(backend, dtype):
    for shape, (pred, gs, clip, noise, vt, tens) in itertools.product(_shapes(backend), DDPM_CASES):
        x, mo, z = make(shape, dtype, gs is not None, seed=1)
        at, ap = alphas(shape[0], tens)
        z = z if noise else None
        kw = dict(prediction_type=pred, guidance_scale=gs, clip_sample_range=clip, variance_type=vt)
        want = ddpm_step_reference(x.double(), mo.double(), _d(at), _d(ap), None if z is None else z.double(), **kw)
        with genkernels.use_backend(backend):
            got = ddpm_step(x, mo, at, ap, z, **kw)
        for g, w in zip(got, want):
            assert_close(g, w, dtype, scale=4, what=f"{backend} {shape} {pred} {vt}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(0, 4, 3, 3), (2, 0, 3, 3), (2, 4, 0)])
def test_empty(backend, shape):
    x, mo, z = make(shape, torch.float32, True)
    with genkernels.use_backend(backend):
        p, o = ddim_step(x, mo, 0.5, 0.7, 0.5, z, guidance_scale=2.0)
    assert p.shape == x.shape and o.shape == x.shape


@pytest.mark.parametrize("backend", BACKENDS)
def test_channels_last_3d_and_mixed_layouts(backend):
    x, mo, z = make((2, 3, 2, 4, 5), torch.float32, True)
    xc = x.to(memory_format=torch.channels_last_3d)
    want = ddim_step_reference(x.double(), mo.double(), 0.4, 0.6, 0.5, z.double(), guidance_scale=2.0)
    with genkernels.use_backend(backend):
        got = ddim_step(xc, mo, 0.4, 0.6, 0.5, z[:, :, :, :, :], guidance_scale=2.0)  # mo, z stay NCDHW
        strided = ddim_step(x[:, :, :, :, ::1].transpose(3, 4).contiguous().transpose(3, 4), mo, 0.4, 0.6, 0.5, z,
                            guidance_scale=2.0)
    assert got[0].is_contiguous(memory_format=torch.channels_last_3d)
    for g, s, w in zip(got, strided, want):
        assert_close(g, w, torch.float32)
        assert_close(s, w, torch.float32)


@pytest.mark.parametrize("backend", [b for b in compiled_backends() if b != "triton" or DEVICE.type == "cuda"])
def test_large_step_streaming_stores(backend):
    """Outputs over 24 MiB take the CPU kernel's non-temporal-store path; odd L misaligns samples."""
    x, mo, z = make((3, 1, 1100001), torch.float32, True)
    with genkernels.use_backend(backend):
        got = ddim_step(x, mo, 0.3, 0.5, 0.5, z, guidance_scale=3.0, clip_sample_range=1.0)
    want = ddim_step_reference(x, mo, 0.3, 0.5, 0.5, z, guidance_scale=3.0, clip_sample_range=1.0)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)


def test_alpha_broadcast_forms_agree():
    x, mo, _ = make((3, 2, 4), torch.float32, False)
    ref = ddim_step(x, mo, 0.3, 0.5)
    for at in (torch.tensor(0.3, device=DEVICE), torch.tensor([0.3], device=DEVICE),
               torch.full((3,), 0.3, device=DEVICE, dtype=torch.float64)):
        got = ddim_step(x, mo, at, torch.tensor([0.5, 0.5, 0.5], device=DEVICE))
        for g, w in zip(got, ref):
            torch.testing.assert_close(g, w, atol=1e-6, rtol=1e-6)


# ------------------------------------------------------------------ gradients
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", [("epsilon", 3.0, 1.5, 0.7, False, True), ("v_prediction", None, None, 0.0, False, False),
                                  ("sample", 2.0, 0.8, 0.4, True, False)])
def test_gradcheck(backend, case):
    pred, gs, clip, eta, uc, tens = case
    x, mo, z = make((2, 3, 4), torch.float64, gs is not None)
    x, mo, z = (t.detach().requires_grad_() for t in (x * 0.3, mo * 0.3, z))  # keep x0 away from the clip
    at, ap = alphas(2, tens)

    def f(x, mo, z):
        return ddim_step(x, mo, at, ap, eta, z, prediction_type=pred, guidance_scale=gs, clip_sample_range=clip,
                         use_clipped_model_output=uc)

    with genkernels.use_backend(backend):
        assert torch.autograd.gradcheck(f, (x, mo, z), fast_mode=backend == "triton")
        assert torch.autograd.gradgradcheck(f, (x, mo, z), fast_mode=True)
        g = lambda x, mo: ddpm_step(x, mo, at, ap, z, prediction_type=pred, guidance_scale=gs,  # noqa: E731
                                    clip_sample_range=clip)
        assert torch.autograd.gradcheck(g, (x, mo), fast_mode=True)


def test_backward_matches_reference_autograd_with_clipping():
    x, mo, z = make((2, 3, 8), torch.float32, True)
    x, mo = x.requires_grad_(), mo.requires_grad_()
    kw = dict(prediction_type="epsilon", guidance_scale=4.0, clip_sample_range=0.5)
    at, ap = alphas(2, True)
    gp, go = torch.randn_like(x), torch.randn_like(x)
    p, o = ddim_step(x, mo, at, ap, 0.5, z, **kw)
    gx, gm = torch.autograd.grad([p, o], [x, mo], [gp, go])
    p, o = ddim_step_reference(x, mo, at, ap, 0.5, z, **kw)
    wx, wm = torch.autograd.grad([p, o], [x, mo], [gp, go])
    torch.testing.assert_close(gx, wx, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gm, wm, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ registration and compilation
@pytest.mark.parametrize("backend", compiled_backends())
def test_opcheck(backend):
    op = torch.ops.genkernels.ddim_step.default
    x, mo, z = make((2, 3, 4, 5), torch.float32, True)
    at, ap = alphas(2, True)
    with genkernels.use_backend(backend):
        torch.library.opcheck(op, (x, mo, z, at, ap, 0.0, 0.0, 0.5, 3.0, 1.0, 0, False, 0))
        x1, m1, _ = make((2, 3, 4, 5), torch.float32, False, channels_last=True)
        torch.library.opcheck(op, (x1, m1, None, None, None, 0.3, 0.6, 0.0, None, None, 2, True, 0))
        torch.library.opcheck(op, (x1, m1, z, None, ap, 0.2, 0.0, 0.0, None, 1.0, 1, False, 1))  # a_t <= each a_prev


def test_compile_fullgraph_no_graph_break():
    torch._dynamo.reset()
    x, mo, z = make((2, 4, 6, 6), torch.float32, True)
    at, ap = alphas(2, True, torch.float32)
    x.requires_grad_()

    def f(x, mo, z, at, ap):
        p, o = ddim_step(x * 2, mo, at, ap, 0.5, z, guidance_scale=5.0, clip_sample_range=1.0)
        q, _ = ddpm_step(p, mo, 0.3, 0.5, z, guidance_scale=5.0)
        return (q + o).sum()

    explain = torch._dynamo.explain(f)(x, mo, z, at, ap)
    assert explain.graph_break_count == 0 and explain.graph_count == 1
    cf = torch.compile(f, fullgraph=True)
    out = cf(x, mo, z, at, ap)
    out.backward()
    torch.testing.assert_close(out, f(x, mo, z, at, ap), atol=1e-3, rtol=1e-5)


def test_scheduler_step_compiles_fullgraph():
    """A timestep tensor inside torch.compile takes the device-tensor alpha path (no sync, no graph break)."""
    torch._dynamo.reset()
    s = DDIMScheduler(clip_sample=True)
    s.set_timesteps(10)
    x, mo, z = make((2, 3, 4, 4), torch.float32, True)

    def f(mo, t, x, z):
        return s.step(mo, t, x, eta=0.5, variance_noise=z, guidance_scale=5.0).prev_sample

    cf = torch.compile(f, fullgraph=True)
    for t in (s.timesteps[0], s.timesteps[-1]):
        torch.testing.assert_close(cf(mo, t, x, z), f(mo, t, x, z), atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ errors
def test_errors_name_the_argument():
    x, mo, z = make((2, 3, 4), torch.float32, False)
    cases = [
        (TypeError, "sample", lambda: ddim_step(x.numpy(), mo, 0.5, 0.6)),
        (TypeError, "sample", lambda: ddim_step(x.int(), mo, 0.5, 0.6)),
        (ValueError, "sample", lambda: ddim_step(x[0, 0, 0], mo, 0.5, 0.6)),
        (TypeError, "model_output", lambda: ddim_step(x, mo.double(), 0.5, 0.6)),
        (ValueError, "model_output", lambda: ddim_step(x, mo[:1], 0.5, 0.6)),
        (ValueError, "2N", lambda: ddim_step(x, mo, 0.5, 0.6, guidance_scale=3.0)),
        (TypeError, "guidance_scale", lambda: ddim_step(x, mo, 0.5, 0.6, guidance_scale="7")),
        (ValueError, "eta", lambda: ddim_step(x, mo, 0.5, 0.6, eta=-0.1)),
        (ValueError, "noise", lambda: ddim_step(x, mo, 0.5, 0.6, eta=0.5)),
        (ValueError, "noise", lambda: ddim_step(x, mo, 0.5, 0.6, 0.5, z[:1])),
        (TypeError, "noise", lambda: ddim_step(x, mo, 0.5, 0.6, 0.5, z.half())),
        (ValueError, "generator", lambda: ddim_step(x, mo, 0.5, 0.6, 0.5, z, generator=torch.Generator())),
        (ValueError, "prediction_type", lambda: ddim_step(x, mo, 0.5, 0.6, prediction_type="eps")),
        (ValueError, "clip_sample_range", lambda: ddim_step(x, mo, 0.5, 0.6, clip_sample_range=0.0)),
        (ValueError, "alpha_prod_t", lambda: ddim_step(x, mo, 1.5, 0.6)),
        (TypeError, "alpha_prod_t_prev", lambda: ddim_step(x, mo, 0.5, "0.6")),
        (ValueError, "alpha_prod_t", lambda: ddim_step(x, mo, torch.full((3,), 0.5), 0.6)),
        (TypeError, "alpha_prod_t", lambda: ddim_step(x, mo, torch.full((2,), 0.5, dtype=torch.float16), 0.6)),
        (ValueError, "variance_type", lambda: ddpm_step(x, mo, 0.5, 0.6, variance_type="learned")),
    ]
    if DEVICE.type == "cuda":
        cases.append((ValueError, "model_output", lambda: ddim_step(x, mo.cpu(), 0.5, 0.6)))
        cases.append((ValueError, "alpha_prod_t", lambda: ddim_step(x, mo, torch.full((2,), 0.5), 0.6)))
    for exc, name, fn in cases:
        with pytest.raises(exc, match=name):
            fn()
    with pytest.raises(ValueError, match="thresholding"):
        DDIMScheduler(thresholding=True)
    with pytest.raises(ValueError, match="set_timesteps"):
        DDIMScheduler().step(mo, 10, x)


def test_generator_noise_is_reproducible():
    x, mo, _ = make((2, 3, 4), torch.float32, False)
    a = ddim_step(x, mo, 0.5, 0.6, 0.8, generator=torch.Generator(DEVICE).manual_seed(3))
    b = ddim_step(x, mo, 0.5, 0.6, 0.8, generator=torch.Generator(DEVICE).manual_seed(3))
    z = torch.randn(x.shape, generator=torch.Generator(DEVICE).manual_seed(3), device=DEVICE)
    c = ddim_step(x, mo, 0.5, 0.6, 0.8, z)
    assert torch.equal(a[0], b[0]) and torch.equal(a[0], c[0])


# ------------------------------------------------------------------ sampling loops against diffusers
def fake_model(x, t):
    """A deterministic stand-in for a UNet: a smooth function of the sample and the timestep."""
    t = t.to(x.device, torch.float32).reshape((-1,) + (1,) * (x.dim() - 1)) if torch.is_tensor(t) else float(t)
    return torch.tanh(0.7 * x + torch.sin(torch.as_tensor(t, device=x.device) / 97.0)) + 0.1 * torch.cos(3 * x)


def cond_model(x, t):
    return 0.8 * fake_model(x, t) + 0.1 * torch.sin(x + 1)


def _loop(ours, theirs, steps, gs, step_kw, per_sample_t=False, seed=0):
    ours.set_timesteps(steps)
    theirs.set_timesteps(steps)
    assert torch.equal(ours.timesteps, theirs.timesteps)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(seed)).to(DEVICE)
    xo, xt = x.clone(), x.clone()
    go, gt = torch.Generator(DEVICE).manual_seed(seed + 1), torch.Generator(DEVICE).manual_seed(seed + 1)
    for t in theirs.timesteps:
        if gs is None:
            mt = fake_model(xt, t)
            mo = fake_model(xo, t)
        else:
            u, c = fake_model(xt, t), cond_model(xt, t)
            mt = u + gs * (c - u)
            mo = torch.cat([fake_model(xo, t), cond_model(xo, t)])
        rt = theirs.step(mt, t, xt, generator=gt, **step_kw)
        to = t.repeat(2).to(DEVICE) if per_sample_t else t
        ro = ours.step(mo, to, xo, generator=go, guidance_scale=gs, **step_kw)
        xt, xo = rt.prev_sample, ro.prev_sample
        torch.testing.assert_close(ro.pred_original_sample, rt.pred_original_sample, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(xo, xt, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("steps", [10, 50])
@pytest.mark.parametrize("eta", [0.0, 0.7])
@pytest.mark.parametrize("guidance", [None, 5.0])
def test_ddim_sampling_loop_matches_diffusers(prediction_type, steps, eta, guidance, diffusers):
    cfg = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type=prediction_type,
               steps_offset=1, set_alpha_to_one=False, clip_sample=prediction_type == "sample")
    theirs = diffusers.DDIMScheduler(**cfg)
    ours = DDIMScheduler.from_config(theirs.config)
    _loop(ours, theirs, steps, guidance, dict(eta=eta, use_clipped_model_output=eta > 0),
          per_sample_t=steps == 10 and eta > 0)


@pytest.mark.parametrize("cfg", [
    dict(beta_schedule="linear", timestep_spacing="trailing", clip_sample=True),
    dict(beta_schedule="squaredcos_cap_v2", timestep_spacing="linspace", set_alpha_to_one=True),
    dict(beta_schedule="scaled_linear", timestep_spacing="trailing", rescale_betas_zero_snr=True,
         prediction_type="v_prediction", clip_sample=False),
])
def test_ddim_scheduler_configs_match_diffusers(cfg, diffusers):
    theirs = diffusers.DDIMScheduler(**cfg)
    ours = DDIMScheduler.from_config(theirs.config)
    torch.testing.assert_close(ours.alphas_cumprod, theirs.alphas_cumprod, atol=0, rtol=0)
    _loop(ours, theirs, 20, 3.0, dict(eta=0.5))


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
def test_ddpm_sampling_loop_matches_diffusers(prediction_type, variance_type, diffusers):
    theirs = diffusers.DDPMScheduler(prediction_type=prediction_type, variance_type=variance_type,
                                     beta_schedule="squaredcos_cap_v2")
    ours = DDPMScheduler.from_config(theirs.config)
    _loop(ours, theirs, 25, 2.0 if prediction_type == "epsilon" else None, {},
          per_sample_t=prediction_type == "sample")


def test_scheduler_timesteps_match_diffusers(diffusers):
    for spacing, offset, n in itertools.product(["leading", "trailing", "linspace"], [0, 1], [1, 7, 10, 50, 999]):
        kw = dict(timestep_spacing=spacing, steps_offset=offset)
        a, b = diffusers.DDIMScheduler(**kw), DDIMScheduler(**kw)
        a.set_timesteps(n)
        b.set_timesteps(n)
        assert torch.equal(a.timesteps, b.timesteps), (spacing, offset, n)


def test_scheduler_step_on_python_int_and_tuple_return():
    s = DDIMScheduler(clip_sample=False)
    s.set_timesteps(10)
    x = torch.randn(1, 2, 3, device=DEVICE)
    a = s.step(fake_model(x, 901), 901, x)
    b = s.step(fake_model(x, 901), torch.tensor(901), x, return_dict=False)
    assert torch.equal(a.prev_sample, b[0]) and torch.equal(a.pred_original_sample, b[1])
