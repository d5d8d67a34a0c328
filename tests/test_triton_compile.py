"""The Triton kernels compile for sm_90 (cubin, shared memory within the limit) on this GPU-less
machine: CI otherwise runs them only through the interpreter, which accepts code the GPU compiler
rejects. The work happens in a subprocess (tests/triton_sm90_build.py) because the test session
imports triton in interpreter mode."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

triton = pytest.importorskip("triton")


def _has_cuda_backend() -> bool:
    try:
        from triton.backends import backends
    except ImportError:
        return False
    return "nvidia" in backends


@pytest.mark.slow
@pytest.mark.skipif(not _has_cuda_backend(), reason="this triton has no NVIDIA backend")
def test_every_triton_kernel_compiles_for_sm90(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)  # a real compile, not a cache hit
    script = Path(__file__).with_name("triton_sm90_build.py")
    r = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=1200)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert " 0 errors" in r.stdout and " 0 specialisations" not in r.stdout, out[-2000:]


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
