"""group_norm_silu: every available backend against the float64 reference, gradients, registration,
compilation and argument errors."""
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F

import genkernels
from genkernels import _native
from genkernels import backend as gk_backend
from genkernels.nn import GroupNormSiLU

from conftest import DEVICE, assert_close, compiled_backends, same_layout

BACKENDS = ["reference"] + compiled_backends()
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]

# (shape, groups): odd sizes, non-power-of-two group widths, 1-D and 3-D spatial, HW = 1.
SHAPES = [
    ((2, 64, 8, 8), 32),
    ((3, 6, 7, 5), 3),
    ((1, 20, 9, 3), 2),     # Cg = 10
    ((2, 40, 11), 4),       # 1-D spatial
    ((1, 12, 3, 4, 5), 3),  # 3-D spatial
    ((4, 8, 1, 1), 8),      # instance-norm-like, HW = 1
    ((2, 16), 4),           # no spatial dims
    ((1, 96, 3, 3), 1),     # short rows, a group longer than one run of them (csrc/cpu group_norm.cpp)
]


def _small(backend, shapes):
    """The Triton interpreter is slow: give it the smaller cases only."""
    if backend != "triton" or DEVICE.type == "cuda":
        return shapes
    return [s for s in shapes if torch.Size(s[0]).numel() <= 4096]


def to_layout(x, channels_last):
    if not channels_last or x.dim() < 3:
        return x
    return x.movedim(1, -1).contiguous().movedim(-1, 1)


def make(shape, dtype, mean=0.0, std=1.0, seed=0, params=True, film=True):
    g = torch.Generator().manual_seed(seed)
    N, C = shape[:2]
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * std + mean).to(dtype)
    p = {}
    pd = torch.float64 if dtype == torch.float64 else torch.float32
    if params:
        p["weight"] = (torch.randn(C, generator=g) * 0.5 + 1).to(DEVICE, pd)
        p["bias"] = (torch.randn(C, generator=g) * 0.5).to(DEVICE, pd)
    if film:
        p["scale"] = (torch.randn(N, C, generator=g) * 0.3).to(DEVICE, pd)
        p["shift"] = (torch.randn(N, C, generator=g) * 0.3).to(DEVICE, pd)
    return x.to(DEVICE), p


def ref64(x, G, p, act="silu", eps=1e-5):
    return genkernels.group_norm_silu_reference(
        x.double(), G, eps=eps, act=act, **{k: v.double() for k, v in p.items()})


def run(backend, x, G, p, act="silu", eps=1e-5):
    with genkernels.use_backend(backend):
        return genkernels.group_norm_silu(x, G, eps=eps, act=act, **p)


def cases(backend):
    return [(s, G) for s, G in _small(backend, SHAPES)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "cl"])
@pytest.mark.parametrize("act", ["silu", None])
def test_forward_matches_reference(backend, dtype, channels_last, act):
    for i, (shape, G) in enumerate(cases(backend)):
        x, p = make(shape, dtype, seed=i, film=(i % 2 == 0))
        x = to_layout(x, channels_last)
        y = run(backend, x, G, p, act)
        assert y.dtype == dtype and y.shape == x.shape
        if x.dim() >= 3:
            assert same_layout(y, x), f"memory format not kept for {shape}"
        assert_close(y, ref64(x, G, p, act), dtype, what=f"{backend} {shape} G={G}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64], ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "cl"])
def test_large_mean_keeps_variance(backend, dtype, channels_last):
    """1000 + randn: a one-pass E[x^2] - E[x]^2 in float32 would lose most digits of the variance."""
    shape = (2, 16, 12, 12) if backend != "triton" else (2, 8, 6, 6)
    x, p = make(shape, dtype, mean=1000.0, std=1.0)
    x = to_layout(x, channels_last)
    y = run(backend, x, 4, p)
    # x - mean is only known to the input's ulp (~6e-5 at 1000 in float32): a few of those, where a
    # one-pass variance would be off by ~3e-2.
    assert_close(y, ref64(x, 4, p), dtype, scale=10 if dtype == torch.float32 else 1, what="large mean")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16], ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "cl"])
def test_backward_matches_reference(backend, dtype, channels_last):
    for i, (shape, G) in enumerate(cases(backend)[:5]):
        x, p = make(shape, dtype, mean=3.0, seed=10 + i)
        x = to_layout(x, channels_last).requires_grad_()
        ps = {k: v.clone().requires_grad_() for k, v in p.items()}
        gy = to_layout(torch.randn(shape, dtype=torch.float64).to(dtype).to(DEVICE), not channels_last)
        with genkernels.use_backend(backend):
            y = genkernels.group_norm_silu(x, G, **ps)
        got = torch.autograd.grad(y, [x] + list(ps.values()), gy)

        x64 = x.detach().double().requires_grad_()
        p64 = {k: v.detach().double().requires_grad_() for k, v in p.items()}
        y64 = genkernels.group_norm_silu_reference(x64, G, **p64)
        want = torch.autograd.grad(y64, [x64] + list(p64.values()), gy.double())
        # A one-element group has rstd = 1/sqrt(eps) ~ 316: dx is 0 up to rounding magnified by that.
        degenerate = torch.Size(shape[2:]).numel() * shape[1] // G == 1
        for name, a, b in zip(["x"] + list(p), got, want):
            assert a.dtype == (dtype if name == "x" else p[name].dtype)
            # parameter grads sum over N*HW terms: allow for the longer accumulation
            scale = (50 if degenerate else 1) if name == "x" else 4
            assert_close(a, b, dtype, scale=scale, what=f"grad {name} {backend} {shape}")
        assert same_layout(got[0], x)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("via_op", [False, True], ids=["eager", "registered_op"])
def test_gradcheck(backend, via_op):
    """Both autograd paths: eager calls (an autograd.Function around the implementation) and the
    registered op's autograd (what compiled and traced code runs)."""
    shape = (2, 6, 3, 4) if backend != "triton" else (1, 4, 2, 3)
    x, p = make(shape, torch.float64, mean=2.0)
    leaves = [x.requires_grad_()] + [v.double().requires_grad_() for v in p.values()]

    def f(x, w, b, s, h):
        with genkernels.use_backend(backend):
            if via_op:
                return torch.ops.genkernels.group_norm_silu(x, 2, w, b, 1e-5, s, h, True)[0]
            return genkernels.group_norm_silu(x, 2, w, b, scale=s, shift=h)

    assert torch.autograd.gradcheck(f, leaves, fast_mode=backend == "triton")
    xc = to_layout(x.detach(), True).requires_grad_()
    assert torch.autograd.gradcheck(f, [xc] + leaves[1:], fast_mode=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_double_backward(backend):
    """create_graph=True differentiates the reference formula, so penalties on input gradients work."""
    x, p = make((2, 4, 3, 3), torch.float64)
    leaves = [x.requires_grad_(), p["weight"].double().requires_grad_()]

    def f(x, w):
        with genkernels.use_backend(backend):
            return genkernels.group_norm_silu(x, 2, w)

    # fast_mode on triton: the full check's hundreds of interpreted launches take minutes
    assert torch.autograd.gradgradcheck(f, leaves, fast_mode=backend == "triton")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(0, 8, 4, 4), (2, 8, 0, 4), (0, 8)])
def test_empty(backend, shape):
    x = torch.randn(shape, device=DEVICE, requires_grad=True)
    w = torch.ones(8, device=DEVICE, requires_grad=True)
    with genkernels.use_backend(backend):
        y = genkernels.group_norm_silu(x, 4, w)
        assert y.shape == x.shape
        y.sum().backward()
    assert x.grad.shape == x.shape and torch.equal(w.grad, torch.zeros_like(w))


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_stays_in_its_group(backend):
    x, _ = make((2, 8, 4, 4), torch.float32)
    x[0, 1, 2, 2] = float("nan")
    y = run(backend, x, 4, {})
    assert torch.isnan(y[0, :2]).all()                # the poisoned group
    assert torch.isfinite(y[0, 2:]).all() and torch.isfinite(y[1]).all()


def test_no_variance_group_is_finite():
    x = torch.full((1, 4, 3, 3), 7.0, device=DEVICE)
    y = genkernels.group_norm_silu(x, 2)
    torch.testing.assert_close(y, torch.zeros_like(y))


def test_matches_torch_group_norm_and_silu():
    x, p = make((2, 32, 9, 9), torch.float32, params=True, film=False)
    want = F.silu(F.group_norm(x, 8, p["weight"], p["bias"]))
    torch.testing.assert_close(genkernels.group_norm_silu(x, 8, p["weight"], p["bias"]), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", compiled_backends())
def test_opcheck(backend):
    x, p = make((2, 8, 3, 5), torch.float32)
    with genkernels.use_backend(backend):
        torch.library.opcheck(torch.ops.genkernels.group_norm_silu.default,
                              (x, 4, p["weight"], p["bias"], 1e-5, p["scale"], p["shift"], True))
        torch.library.opcheck(torch.ops.genkernels.group_norm_silu.default,
                              (to_layout(x, True), 2, None, None, 1e-5, None, None, False))
        y, mean, rstd = torch.ops.genkernels.group_norm_silu(x, 4, p["weight"], None, 1e-5, None, None, True)
        torch.library.opcheck(torch.ops.genkernels.norm_backward.default,
                              (torch.randn_like(y), x, mean, rstd, p["weight"], None, None, None, 4, 1e-5, True, True,
                               backend))


def test_compile_fullgraph_no_graph_break():
    torch._dynamo.reset()
    x, p = make((2, 16, 6, 6), torch.float32)
    x.requires_grad_()

    def f(x, w, b, s, h):
        return genkernels.group_norm_silu(x * 2, 4, w, b, scale=s, shift=h).sum()

    explain = torch._dynamo.explain(f)(x, *p.values())
    assert explain.graph_break_count == 0 and explain.graph_count == 1
    cf = torch.compile(f, fullgraph=True)
    out = cf(x, *p.values())
    out.backward()
    torch.testing.assert_close(out, f(x, *p.values()), atol=1e-4, rtol=1e-5)


# ------------------------------------------------------------------ errors
def test_errors_name_the_argument():
    x = torch.randn(2, 6, 4, 4, device=DEVICE)
    gn = genkernels.group_norm_silu
    with pytest.raises(ValueError, match="num_groups"):
        gn(x, 4)
    with pytest.raises(ValueError, match="num_groups"):
        gn(x, 0)
    with pytest.raises(TypeError, match="num_groups"):
        gn(x, 2.0)
    with pytest.raises(ValueError, match="weight"):
        gn(x, 3, torch.ones(5, device=DEVICE))
    with pytest.raises(ValueError, match="bias"):
        gn(x, 3, None, torch.ones(6, 1, device=DEVICE))
    with pytest.raises(ValueError, match="scale"):
        gn(x, 3, scale=torch.ones(6, device=DEVICE))
    with pytest.raises(ValueError, match="shift"):
        gn(x, 3, shift=torch.ones(3, 6, device=DEVICE))
    with pytest.raises(TypeError, match="`x`"):
        gn(torch.ones(2, 6, 4, dtype=torch.int32), 3)
    with pytest.raises(TypeError, match="weight"):
        gn(x, 3, torch.ones(6, dtype=torch.int64, device=DEVICE))
    with pytest.raises(ValueError, match="`x`"):
        gn(torch.ones(6, device=DEVICE), 3)
    with pytest.raises(ValueError, match="`x`"):
        gn(torch.ones(1, 6, 2, 2, 2, 2, device=DEVICE), 3)
    with pytest.raises(ValueError, match="weight.*meta"):
        gn(x, 3, torch.ones(6, device="meta"))
    with pytest.raises(ValueError, match="act"):
        gn(x, 3, act="relu")
    with pytest.raises(TypeError, match="`x`"):
        gn([1.0, 2.0], 1)


def test_forced_backend_that_cannot_run_is_an_error():
    if DEVICE.type == "cpu":
        with genkernels.use_backend("cuda"), pytest.raises(RuntimeError, match="cuda"):
            genkernels.group_norm_silu(torch.randn(1, 4, 2, 2), 2)
    with pytest.raises(ValueError, match="unknown backend"):
        genkernels.use_backend("fast")


def test_use_backend_context_restores():
    assert genkernels.current_backend() == "auto"
    with genkernels.use_backend("reference"):
        assert genkernels.current_backend() == "reference"
    assert genkernels.current_backend() == "auto"


def test_auto_falls_back_to_reference_with_one_warning(monkeypatch):
    monkeypatch.setitem(_native._modules, "_C", None)
    monkeypatch.setitem(_native._errors, "_C", "ImportError: simulated")
    monkeypatch.setattr(gk_backend, "_warned", set())
    x = torch.randn(1, 4, 3, 3)
    with pytest.warns(RuntimeWarning, match="reference") as rec:
        y1 = genkernels.group_norm_silu(x, 2)
        genkernels.group_norm_silu(x, 2)
    assert len(rec) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        genkernels.group_norm_silu(x, 2)
    torch.testing.assert_close(y1, genkernels.group_norm_silu_reference(x, 2))
    with genkernels.use_backend("cpu"), pytest.raises(RuntimeError, match="simulated"):
        genkernels.group_norm_silu(x, 2)


def test_backend_from_environment():
    code = "import genkernels; print(genkernels.current_backend())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**__import__("os").environ, "GENKERNELS_BACKEND": "reference"})
    assert out.stdout.strip() == "reference", out.stderr


# ------------------------------------------------------------------ threads
def test_thread_counts_agree():
    x, p = make((2, 32, 16, 16), torch.float32)
    prev = torch.get_num_threads()
    try:
        outs = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            outs.append(run("cpu" if DEVICE.type == "cpu" else "auto", x, 8, p))
    finally:
        torch.set_num_threads(prev)
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], atol=1e-6, rtol=1e-6)


# ------------------------------------------------------------------ module
def test_module_is_drop_in_for_groupnorm_silu():
    ref = torch.nn.Sequential(torch.nn.GroupNorm(8, 32), torch.nn.SiLU()).to(DEVICE)
    with torch.no_grad():
        ref[0].weight.normal_()
        ref[0].bias.normal_()
    m = GroupNormSiLU(8, 32).to(DEVICE)
    assert list(m.state_dict()) == list(ref[0].state_dict())
    m.load_state_dict(ref[0].state_dict())
    x = torch.randn(2, 32, 7, 7, device=DEVICE)
    torch.testing.assert_close(m(x), ref(x), atol=1e-5, rtol=1e-5)
    shared = GroupNormSiLU.from_group_norm(ref[0])
    assert shared.weight is ref[0].weight
    torch.testing.assert_close(shared(x), ref(x), atol=1e-5, rtol=1e-5)
    plain = GroupNormSiLU(8, 32, act=None, affine=False).to(DEVICE)
    torch.testing.assert_close(plain(x), F.group_norm(x, 8), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_runs_on_the_forward_backend(backend, monkeypatch):
    """A backward taken after the `use_backend` block has ended still runs the forward's backend."""
    from genkernels.ops import _norm

    seen = []
    real = _norm.norm_backward
    monkeypatch.setattr(_norm, "norm_backward", lambda b, *a: seen.append(b) or real(b, *a))
    x = torch.randn(1, 4, 2, 3, device=DEVICE, requires_grad=True)
    with genkernels.use_backend(backend):
        y = genkernels.group_norm_silu(x, 2)
    y.sum().backward()
    assert seen == [backend]


def test_eager_autograd_skips_the_dispatcher_and_compiled_code_uses_the_op():
    """Plain eager calls that need a gradient record the lightweight autograd.Function; under
    torch.compile (fullgraph) the registered op and its autograd run instead."""
    x = torch.randn(1, 4, 2, 3, device=DEVICE, requires_grad=True)
    assert type(genkernels.group_norm_silu(x, 2).grad_fn).__name__ == "group_norm_silu_eagerBackward"
    assert type(genkernels.adain(x, torch.ones(1, 4, device=DEVICE), torch.zeros(1, 4, device=DEVICE)).grad_fn).__name__ == "adain_eagerBackward"
    f = torch.compile(lambda t: genkernels.group_norm_silu(t, 2), fullgraph=True, backend="aot_eager")
    y = f(x)
    assert not type(y.grad_fn).__name__.endswith("_eagerBackward")
    (gx,) = torch.autograd.grad(y.sum(), x)
    (want,) = torch.autograd.grad(genkernels.group_norm_silu(x, 2).sum(), x)
    torch.testing.assert_close(gx, want)
