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
