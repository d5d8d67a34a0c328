"""The Triton kernels compile for sm_90 (cubin, shared memory within the limit, no new spills) on this
GPU-less machine: CI otherwise runs them only through the interpreter, which accepts code the GPU
compiler rejects; torch.compile's tracing sees them. The work happens in subprocesses
(tests/triton_sm90_build.py, tests/triton_trace_check.py) because the test session imports triton in
interpreter mode."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

triton = pytest.importorskip("triton")
from genkernels.triton import group_norm as _gn  # noqa: E402


def _has_cuda_backend() -> bool:
    try:
        from triton.backends import backends
    except ImportError:
        return False
    return "nvidia" in backends


def _run_compiled(script: str, timeout: int, *args: str) -> subprocess.CompletedProcess:
    """tests/<script> in a process where triton compiles (TRITON_INTERPRET unset), importing the
    genkernels under test."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = str(Path(__file__).parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])
    return subprocess.run([sys.executable, str(Path(__file__).with_name(script)), *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def _compiles_for_sm90(*args: str, timeout: int):
    r = _run_compiled("triton_sm90_build.py", timeout, *args)  # (a fresh Triton cache of its own)
    out = r.stdout + r.stderr
    print(r.stdout)
    assert r.returncode == 0, out[-4000:]
    assert " 0 errors" in r.stdout and " 0 specialisations" not in r.stdout, out[-2000:]


@pytest.mark.slow
@pytest.mark.skipif(not _has_cuda_backend(), reason="this triton has no NVIDIA backend")
def test_triton_kernels_compile_for_sm90():
    """The CI subset (tests/triton_sm90_build.py representatives: every kernel x dtype x num_warps at
    its heaviest specialisation). Prints each one's registers and spills (pytest -s); a new spill
    fails."""
    _compiles_for_sm90(timeout=1800)


@pytest.mark.long
@pytest.mark.skipif(not _has_cuda_backend(), reason="this triton has no NVIDIA backend")
def test_every_triton_kernel_compiles_for_sm90():
    """Every specialisation the ops launch; also checks that the CI subset holds each group's highest
    register count and largest spill."""
    _compiles_for_sm90("--full", timeout=3600)


@pytest.mark.skipif(not _has_cuda_backend(), reason="this triton has no NVIDIA backend")
def test_torch_compile_traces_the_triton_kernels():
    """On the triton backend with CUDA tensors every op decomposes, under torch.compile's tracing, into
    its Triton kernels (tests/triton_trace_check.py, on fake CUDA tensors)."""
    r = _run_compiled("triton_trace_check.py", timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert r.stdout.count("ok ") == 7, r.stdout


def test_launches_are_wrapped_only_while_traced(monkeypatch):
    """torch.library.wrap_triton only inside launch.traced() (ops/_common.launch enters it while
    torch.compile traces an op): a wrapped eager launch would cost a dispatch."""
    import torch

    from genkernels.triton import launch

    monkeypatch.setattr(torch.library, "wrap_triton", lambda fn: ("wrapped", fn))
    k = _gn._stats_kernel
    assert launch.kernel(k) is k
    with launch.traced():
        assert launch.kernel(k) == ("wrapped", k)
    assert launch.kernel(k) is k


def test_auto_routes_float64_attention_away_from_triton(monkeypatch):
    """On a GPU, auto prefers Triton for attention, whose kernels keep a float32 softmax state: float64
    goes to the CUDA kernels; the Triton wrappers themselves refuse it with a clear error."""
    import torch

    import genkernels
    from genkernels import backend
    from genkernels.ops.attention import gpu_order

    monkeypatch.setattr(backend, "backend_error", lambda name, device: None)  # every backend "available"
    gpu = torch.device("cuda")
    assert backend.resolve("attention", gpu, gpu_order(torch.float64)) == "cuda"
    for dt in (torch.float32, torch.float16, torch.bfloat16):
        assert backend.resolve("attention", gpu, gpu_order(dt)) == "triton"
    q = torch.randn(1, 1, 4, 8, dtype=torch.float64)
    with genkernels.use_backend("triton"), pytest.raises(ValueError, match="float64"):
        genkernels.attention(q, q, q)


def test_launch_grid_refuses_what_cuda_refuses():
    from genkernels.triton.launch import grid

    assert grid(2**31 - 1, 65535, 65535, kernel="k") == (2**31 - 1, 65535, 65535)
    for bad in ((1, 65536), (2**31,), (1, 1, 65536), (0,)):
        with pytest.raises(ValueError, match="my_kernel"):
            grid(*bad, kernel="my_kernel")


def test_attention_grids_take_65536_heads(monkeypatch):
    """B*H = 65,536 (video temporal attention: 2*64*64 positions x 8 heads): every
    attention launch's grid within CUDA's limits, covering every (batch, head). The launches are recorded,
    not run (the interpreter would take minutes for 65,536 programs); the flattened indexing itself runs
    in tests/test_attention.py."""
    import torch

    from genkernels.triton import attention as ta

    grids = []

    class Recorder:
        def __getitem__(self, g):
            grids.append(g)
            return lambda *args, **kwargs: None

    for name in ("_fwd_kernel", "_bwd_dkdv_kernel", "_bwd_dq_kernel"):
        monkeypatch.setattr(ta, name, Recorder())
    B, H, L, d = 8192, 8, 1, 8
    q = torch.zeros(B, H, L, d)
    lse = torch.zeros(B, H, L)
    strides = [H * L * d, L * d, d] * 4
    ta.attention_fwd(q, q, q, None, q, lse, B, H, L, L, d, *strides, 0, 1.0)
    ta.attention_bwd(q, q, q, None, q, q, lse, q, q, q, B, H, L, L, d, *strides, 0, 1.0)
    assert len(grids) == 3
    for g in grids:
        g = tuple(g)
        assert g[0] <= 2**31 - 1 and all(n <= 65535 for n in g[1:]), g
        assert torch.tensor(g).prod().item() >= B * H, g  # at least one program per (batch, head)


def test_group_norm_tile_offsets_are_64_bit():
    """C*HW >= 2**31 (a video VAE activation [1, 128, 65, 720, 1280]): the in-sample offsets of the Triton
    group-norm kernels must not wrap. Checked on the offset helper itself (no 2**31-element tensor)."""
    import torch
    import triton.language as tl


    @triton.jit
    def offsets(OUT, C, HW, CL: tl.constexpr):
        c = C - 1 + tl.arange(0, 1)
        hw = HW - 1 + tl.arange(0, 1)
        tl.store(OUT + tl.arange(0, 1)[:, None], _gn._tile_offsets(c, hw, C, HW, CL))

    C, HW = 128, 65 * 720 * 1280
    for cl, want in ((False, (C - 1) * HW + HW - 1), (True, (HW - 1) * C + C - 1)):
        out = torch.zeros(1, dtype=torch.int64)
        offsets[(1,)](out, C, HW, CL=cl)
        assert out.item() == want > 2**31
