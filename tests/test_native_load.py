"""Loading genkernels._C_cuda against the installed CUDA driver (issue 16, defect 5): the module links
the CUDA runtime statically, so a driver older than that runtime's major version fails every call. The
versions are faked here (no GPU, no driver needed)."""
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
    real_import = _native.importlib.import_module
    monkeypatch.setattr(_native.importlib, "import_module",
                        lambda name, *a: fake if name == "genkernels._C_cuda" else real_import(name, *a))
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
