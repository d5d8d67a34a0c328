"""The wheel: builds without torch, holds both native modules, links no torch library, and works in a
fresh virtual environment (torch-version free: the native code never includes torch headers)."""
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
HAVE_NVCC = shutil.which("nvcc") is not None and os.environ.get("GENKERNELS_CUDA", "auto") not in ("0", "off")
pytestmark = pytest.mark.slow  # builds wheels: CI runs it, the short GPU check (-m "not slow") does not


def _build_wheel(out, isolated, **env):
    cmd = [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(out)]
    if not isolated:
        cmd.append("--no-build-isolation")
    # the test-only emulation module stays out of wheels
    env = dict(os.environ, GENKERNELS_CUDA_EMU="0", **env)
    # setuptools' scratch tree (build/bdist.<platform>) is deleted when a wheel build finishes; a build
    # killed midway leaves it behind, and the next bdist_wheel then fails on its dist-info ("File exists").
    for stale in (ROOT / "build").glob("bdist.*"):
        shutil.rmtree(stale)
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (whl,) = out.glob("genkernels-*.whl")
    return whl


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    # Reuses the CMake build directory that scripts/setup.sh compiled (every module, every architecture):
    # what the tests below check is the packaging, and the device code is not compiled a second time.
    return _build_wheel(tmp_path_factory.mktemp("dist"), isolated=False)


def test_build_needs_no_torch(tmp_path):
    """pip's build isolation installs only pyproject's build requirements (no torch), so the build
    succeeding there shows it needs none. The CPU module alone, for one ISA, keeps it short; no source
    file of any module includes a torch header, which is what makes that hold for the others too."""
    torch_include = re.compile(r'#\s*include\s*[<"](torch|ATen|c10)/')
    offenders = [str(f.relative_to(ROOT)) for f in (ROOT / "csrc").rglob("*")
                 if f.is_file() and torch_include.search(f.read_text(errors="replace"))]
    assert not offenders, f"native sources include torch headers: {offenders}"
    whl = _build_wheel(tmp_path / "dist", isolated=True, GENKERNELS_CUDA="0", GENKERNELS_ISAS="base",
                       GENKERNELS_BUILD_DIR=str(tmp_path / "build"))
    with zipfile.ZipFile(whl) as z:
        assert any(re.match(r"genkernels/_C\.[^/]*so$", n) for n in z.namelist()), z.namelist()


def test_wheel_holds_both_modules_and_no_torch_link(wheel, tmp_path):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        sos = [n for n in names if n.endswith(".so")]
        assert any(re.match(r"genkernels/_C\.[^/]*so$", n) for n in sos), names
        if HAVE_NVCC:
            assert any(re.match(r"genkernels/_C_cuda\.[^/]*so$", n) for n in sos), names
        z.extractall(tmp_path)
    for so in sos:
        dyn = subprocess.run(["readelf", "-d", str(tmp_path / so)], capture_output=True, text=True, check=True).stdout
        needed = re.findall(r"\(NEEDED\).*\[(.*)\]", dyn)
        assert needed, dyn
        bad = [n for n in needed if re.match(r"lib(torch|c10|cudart|python)", n)]
        assert not bad, f"{so} links {bad}: the wheel must not depend on a torch or CUDA runtime build"


def test_wheel_works_in_fresh_venv(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # Reuse this environment's torch (a plain path entry: its editable genkernels hook is not loaded).
    torch_site = str(Path(torch.__file__).parents[1])
    Path(site, "_outer_torch.pth").write_text(torch_site + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)
    smoke = (
        "import torch, genkernels, genkernels._native as n\n"
        "assert genkernels.__file__.startswith(%r), genkernels.__file__\n"
        "assert n.load('_C') is not None, n.load_error('_C')\n"
        "x = torch.randn(2, 8, 5, 5) + 3\n"
        "with genkernels.use_backend('cpu'):\n"
        "    y = genkernels.group_norm_silu(x, 4)\n"
        "torch.testing.assert_close(y, genkernels.group_norm_silu_reference(x, 4), atol=1e-5, rtol=1e-5)\n"
        "print('cuda module:', n.load('_C_cuda') is not None or n.load_error('_C_cuda'))\n"
    ) % str(venv)
    res = subprocess.run([str(py), "-c", smoke], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    if HAVE_NVCC:
        assert "cuda module: True" in res.stdout, res.stdout
    info = subprocess.run([str(venv / "bin" / "genkernels"), "info"], cwd=tmp_path, capture_output=True, text=True)
    assert info.returncode == 0 and "cpu" in info.stdout, info.stdout + info.stderr
