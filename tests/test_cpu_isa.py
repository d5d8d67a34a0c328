"""genkernels._C holds one build of every CPU kernel per instruction set and picks the best one the
machine has, so the rest of the suite tests only that one. Here the CPU parity tests run again, each
in a subprocess, under every other ISA this machine supports (GENKERNELS_CPU_ISA caps the choice)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from genkernels import _native

TESTS = Path(__file__).parent
PARITY = ["test_group_norm_silu.py", "test_adain.py", "test_attention.py", "test_vq_nearest.py",
          "test_ddim_step.py", "test_norm_outliers.py", "test_nonfinite.py"]


def isa_under(cap: str) -> str:
    env = dict(os.environ, GENKERNELS_CPU_ISA=cap)
    r = subprocess.run([sys.executable, "-c", "import genkernels._C as c; print(c.isa)"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


C = _native.load("_C")
NATIVE = getattr(C, "isa", None)
OTHERS = [isa for isa in ("avx512", "avx2", "base") if C is not None and isa != NATIVE and isa_under(isa) == isa]


def test_the_cap_selects_the_isa():
    if C is None:
        pytest.skip("genkernels._C not built")
    assert isa_under("base") == "base"
    assert isa_under("") == NATIVE


@pytest.mark.parametrize("isa", OTHERS or [pytest.param("none", marks=pytest.mark.skip(reason="one ISA here"))])
def test_cpu_parity_under_isa(isa):
    env = dict(os.environ, GENKERNELS_CPU_ISA=isa, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-k", "cpu",
                        *[str(TESTS / f) for f in PARITY]], env=env, capture_output=True, text=True, timeout=1200,
                       cwd=TESTS.parent)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert " passed" in r.stdout.splitlines()[-1], r.stdout[-500:]
