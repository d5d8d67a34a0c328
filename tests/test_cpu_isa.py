"""genkernels._C holds one build of every CPU kernel per instruction set and picks the best one the
machine has, so the rest of the suite tests only that one. Here the CPU parity tests run again, each
in a subprocess, under every other ISA this machine supports (GENKERNELS_CPU_ISA caps the choice)."""
import bisect
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from genkernels import _native

TESTS = Path(__file__).parent
PARITY = ["test_group_norm_silu.py", "test_adain.py", "test_attention.py", "test_vq_nearest.py",
          "test_ddim_step.py", "test_norm_outliers.py", "test_nonfinite.py", "test_silu_extremes.py"]


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


# The x86-64 levels the builds are compiled for (CMakeLists.txt: -march=x86-64-v3 / -v4), as Linux names
# the features in /proc/cpuinfo (it leaves out those whose registers the OS does not save). v2 is implied
# by v3 on every CPU that has AVX2.
LEVELS = {"avx2": {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}}
LEVELS["avx512"] = LEVELS["avx2"] | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}


def _cpu_flags() -> set:
    if platform.machine() != "x86_64" or not Path("/proc/cpuinfo").exists():
        pytest.skip("needs x86-64 Linux")
    return set(re.search(r"^flags\s*:(.*)$", Path("/proc/cpuinfo").read_text(), re.M).group(1).split())


def test_the_widest_build_whose_level_the_cpu_has_is_picked():
    """A CPU with only part of a level (AVX-512F without CD, say) gets the next build down, never one
    compiled for instructions it lacks (SIGILL)."""
    if C is None:
        pytest.skip("needs genkernels._C")
    flags = _cpu_flags()
    want = next(isa for isa in C.built_isas if isa == "base" or LEVELS[isa] <= flags)
    assert isa_under("") == want


LEVEL_PROGRAM = r"""
#include <cstdio>
#include "cpu/cpu_level.h"
int main() {
#ifdef GK_CPU_LEVEL_BUILTIN
  std::printf("%d %d %d\n", gk::x86_level(), gk::x86_level_by_features(), gk::x86_level_builtin());
#else
  std::printf("%d %d\n", gk::x86_level(), gk::x86_level_by_features());
#endif
}
"""


@pytest.mark.parametrize("forced", [False, True])
def test_cpu_level_by_features_matches_the_builtin_and_cpuinfo(tmp_path, forced):
    """csrc/cpu/cpu_level.h: GCC >= 12 asks libgcc for the x86-64 level; other compilers (forced here with
    GK_CPU_LEVEL_BY_FEATURES) read CPUID and XCR0 feature by feature. Both answers, and the level that
    /proc/cpuinfo's flags give, agree on this CPU."""
    flags = _cpu_flags()
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx:
        pytest.skip("needs a C++ compiler")
    src = tmp_path / "level.cpp"
    src.write_text(LEVEL_PROGRAM)
    exe = tmp_path / "level"
    cmd = [cxx, "-std=c++17", "-O1", "-Wall", "-Werror", f"-I{TESTS.parent / 'csrc'}", str(src), "-o", str(exe)]
    subprocess.run(cmd + (["-DGK_CPU_LEVEL_BY_FEATURES"] if forced else []), check=True, timeout=120)
    levels = [int(x) for x in subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()]
    want = 4 if LEVELS["avx512"] <= flags else 3 if LEVELS["avx2"] <= flags else 0
    assert len(levels) == 2 if forced else len(levels) in (2, 3)  # 3: with GCC >= 12's builtin answer
    assert set(levels) == {want}, (levels, want)


def _dynamic_functions(so):
    out = subprocess.run(["readelf", "-W", "--dyn-syms", "-C", str(so)], capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        f = line.split(None, 7)
        if len(f) == 8 and f[3] == "FUNC" and f[6] != "UND" and int(f[2]) > 0:
            yield int(f[1], 16), int(f[2]), f[7]


def _vector_instructions(so):
    """(address, "vex" | "evex") of every VEX (c4/c5 first byte: AVX) and EVEX (62: AVX-512) instruction;
    in 64-bit mode these bytes open no other instruction."""
    out = subprocess.run(["objdump", "-d", str(so)], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or not parts[0].strip().endswith(":"):
            continue
        b = parts[1].split()
        while b and b[0] in ("66", "67", "f2", "f3", "f0", "2e", "3e", "26", "36", "64", "65"):
            b = b[1:]
        kind = {"c4": "vex", "c5": "vex", "62": "evex"}.get(b[0] if b else "")
        if kind:
            yield int(parts[0].strip()[:-1], 16), kind


def test_code_outside_an_isa_build_uses_no_wider_instructions():
    """Inline std:: functions (vector, string) are compiled into every ISA's objects and the linker keeps
    one copy, which every build then calls: it must be base's (CMakeLists.txt links base first)."""
    if C is None or platform.machine() != "x86_64" or not (shutil.which("readelf") and shutil.which("objdump")):
        pytest.skip("needs genkernels._C on x86-64 and binutils")
    functions = list(_dynamic_functions(C.__file__))
    # today's copies are plain code whoever's they are, so also check they are base's: linked from the
    # base objects, they lie outside the address span of the wider builds' kernels
    for isa in ("avx2", "avx512"):
        entries = [start for start, _, name in functions if re.fullmatch(rf"gk::{isa}::\w+\(gk::Flat const&, int\)", name)]
        if entries:
            inside = [name for start, _, name in functions if "gk::" not in name and min(entries) <= start <= max(entries)]
            assert not inside, (isa, inside)
    allowed = {"gk::avx512::": {"vex", "evex"}, "gk::avx2::": {"vex"}}
    vector = sorted(_vector_instructions(C.__file__))
    assert any(kind == "evex" for _, kind in vector) == ("avx512" in C.built_isas)  # the scan sees them
    wrong = set()
    for start, size, name in functions:
        ok = next((v for k, v in allowed.items() if k in name), set())
        i = bisect.bisect_left(vector, (start, ""))
        while i < len(vector) and vector[i][0] < start + size:
            if vector[i][1] not in ok:
                wrong.add(f"{name}: {vector[i][1]}")
            i += 1
    assert not wrong, sorted(wrong)


@pytest.mark.parametrize("isa", OTHERS or [pytest.param("none", marks=pytest.mark.skip(reason="one ISA here"))])
def test_cpu_parity_under_isa(isa):
    env = dict(os.environ, GENKERNELS_CPU_ISA=isa, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-k", "cpu",
                        *[str(TESTS / f) for f in PARITY]], env=env, capture_output=True, text=True, timeout=1200,
                       cwd=TESTS.parent)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert " passed" in r.stdout.splitlines()[-1], r.stdout[-500:]
