"""Loading genkernels._C_cuda against the installed CUDA driver (issue 16, defect 5): the module links
the CUDA runtime statically, so a driver older than that runtime's major version fails every call. The
versions are faked here (no GPU, no driver needed)."""
import os
import shutil
import subprocess
import sys
import types
import warnings

import pytest
import torch

from genkernels import _native
from genkernels.backend import backend_error, resolve


@pytest.fixture
def fake_cuda_module(monkeypatch):
    """load("_C_cuda") imports a fake module built with CUDA runtime 13.0; returns a setter of the
    driver's version. The real modules and their cached state are restored afterwards."""
    fake = types.SimpleNamespace(runtime_version=13000, archs="90")
    real_import = _native._import
    monkeypatch.setattr(_native, "_import", lambda name: fake if name == "_C_cuda" else real_import(name))
    monkeypatch.setattr(_native, "_modules", {k: v for k, v in _native._modules.items() if k != "_C_cuda"})
    monkeypatch.setattr(_native, "_errors", {k: v for k, v in _native._errors.items() if k != "_C_cuda"})
    monkeypatch.setattr(_native, "_cuda_runtime", {})

    def set_driver(version):
        monkeypatch.setattr(_native, "driver_version", lambda: version)
    return fake, set_driver


def test_old_driver_turns_the_cuda_backend_off_with_one_warning(fake_cuda_module):
    _, set_driver = fake_cuda_module
    set_driver(12040)  # a CUDA 12.4 driver (R550)
    with pytest.warns(RuntimeWarning, match=r"CUDA 12\.4, older than the CUDA 13\.0 runtime") as rec:
        assert _native.load("_C_cuda") is None
        assert _native.load("_C_cuda") is None
        _native.load_error("_C_cuda")
    assert len(rec) == 1
    cuda = torch.device("cuda")
    assert "CUDA 12.4" in backend_error("cuda", cuda)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # resolve's own warning when it has to take the reference
        fallback = resolve("ddim_step", cuda)
    assert fallback == ("triton" if backend_error("triton", cuda) is None else "reference")
    assert _native.cuda_versions() == {"runtime": 13000, "driver": 12040}


@pytest.mark.parametrize("driver", [13000, 13020, 14000, None])
def test_driver_of_the_same_or_a_newer_major_version_keeps_the_module(fake_cuda_module, driver):
    fake, set_driver = fake_cuda_module
    set_driver(driver)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _native.load("_C_cuda") is fake
    assert _native.load_error("_C_cuda") is None


def test_minor_version_compatibility():
    assert _native.driver_too_old(12080, 12000) is None  # CUDA 12.8 runtime on a 12.0 (R525) driver
    assert "CUDA 12.x driver" in _native.driver_too_old(12080, 11080)
    assert "CUDA 11.x toolkit" in _native.driver_too_old(12080, 11080)


def test_driver_version_reads_the_driver_library_or_says_none():
    v = _native.driver_version()
    assert v is None or (isinstance(v, int) and v >= 1000)


def test_native_modules_only_from_this_package(tmp_path):
    """A copy of the package without its built modules, with a finder that supplies another checkout's
    (what an editable install of one adds after the path): the copy reports them not loaded, and
    `genkernels info` says so, instead of running the other checkout's kernels."""
    if _native.load("_C") is None:
        pytest.skip("genkernels._C is not built here: no other checkout's module to refuse")
    here = os.path.dirname(_native.__file__)
    shutil.copytree(here, tmp_path / "genkernels", ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    script = f"""
import importlib.machinery, sys
class OtherCheckout:
    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname.startswith("genkernels."):
            return importlib.machinery.PathFinder.find_spec(fullname, [{here!r}])
sys.meta_path.append(OtherCheckout)
import genkernels
from genkernels import _native
from genkernels.cli import main
assert genkernels.__file__.startswith({str(tmp_path)!r}), genkernels.__file__
assert _native.load("_C") is None and _native.load("_C_cuda") is None
main(["info"])
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"genkernels._C: not loaded: ModuleNotFoundError: genkernels._C is not in {tmp_path}" in r.stdout
    assert "genkernels._C_cuda: not loaded" in r.stdout
