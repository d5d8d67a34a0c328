"""The `emulated` fixture: backend "cuda" on CPU tensors with its kernels from genkernels._C_cuemu
(csrc/cuda compiled by the host compiler, csrc/cuda_emu/emu.h), for the tests that hold the CUDA
kernels to what the other backends do (tests/test_cuda_emulated.py, tests/test_nonfinite.py)."""
import pytest

from genkernels import _native
from genkernels import backend as _backend

needs_cuemu = pytest.mark.skipif(_native.load("_C_cuemu") is None,
                                 reason=f"genkernels._C_cuemu not built ({_native.load_error('_C_cuemu')})")

CALLS = []  # names of the emulated kernels the current test ran


class _Counting:
    """_C_cuemu, recording which kernels are called."""

    def __init__(self, mod):
        self._mod = mod

    def __getattr__(self, name):
        fn = getattr(self._mod, name)

        def call(*args):
            CALLS.append(name)
            return fn(*args)

        return call


@pytest.fixture
def emulated(monkeypatch):
    """Backend "cuda" on CPU tensors, its kernels from _C_cuemu (test-only: the product's cuda backend
    still rejects CPU tensors)."""
    real_error, real_load = _backend.backend_error, _native.load
    emu = _Counting(real_load("_C_cuemu"))

    def backend_error(name, device):
        return None if name == "cuda" and device.type == "cpu" else real_error(name, device)

    monkeypatch.setattr(_backend, "backend_error", backend_error)
    monkeypatch.setattr(_native, "load", lambda name: emu if name == "_C" else real_load(name))
    CALLS.clear()
    yield "cuda"
    assert CALLS, "no emulated CUDA kernel ran"


def ran(*kernels):
    missing = set(kernels) - set(CALLS)
    assert not missing, f"kernels not run: {missing} (ran {sorted(set(CALLS))})"
