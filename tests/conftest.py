"""Shared test setup.

Without a GPU, the Triton backend is tested through Triton's interpreter on CPU tensors: that needs
TRITON_INTERPRET=1 in the environment before triton is first imported, so it is set here.
"""
import os
import tempfile

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# A private Inductor cache per run: a cache left by an older checkout can hold graphs that call a
# custom op with its old schema.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="gk-inductor-"))

import pytest  # noqa: E402

import genkernels  # noqa: E402
from genkernels import backend as _backend  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")

# Per-dtype tolerances (atol, rtol) for a result compared with a float64 reference computed from the
# same (already rounded) input: a few units in the last place of the output type.
TOL = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (2e-5, 2e-5),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1.6e-2),
}


def compiled_backends(device=DEVICE):
    """The non-reference backends that can run on `device` here."""
    return [b for b in genkernels.available_backends(device) if b != "reference"]


def assert_close(actual, expected, dtype, scale=1.0, what=""):
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(actual.double(), expected.double(), atol=atol * scale, rtol=rtol * scale,
                               msg=lambda m: f"{what}: {m}")


def pytest_collection_modifyitems(config, items):
    """`long` tests (training to quality, minutes each) run only on demand: GENKERNELS_LONG=1.
    GENKERNELS_TEST_SHARD=k/n keeps every n-th collected test from the k-th on (scripts/test.sh runs one
    pytest per core that way; interleaving spreads each file's slow cases over the shards)."""
    shard = os.environ.get("GENKERNELS_TEST_SHARD")
    if shard:
        k, n = (int(v) for v in shard.split("/"))
        if not 0 <= k < n:
            raise pytest.UsageError(f"GENKERNELS_TEST_SHARD={shard!r}: want k/n with 0 <= k < n")
        config.hook.pytest_deselected(items=[it for i, it in enumerate(items) if i % n != k])
        items[:] = [it for i, it in enumerate(items) if i % n == k]
    if os.environ.get("GENKERNELS_LONG") == "1":
        return
    skip = pytest.mark.skip(reason="long: set GENKERNELS_LONG=1 to run")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _restore_backend():
    process, local = _backend._process, _backend._local.get()
    yield
    _backend.set_backend(process)
    _backend._local.set(local)


def same_layout(a, b):
    """Same memory layout (strides of dims of size > 1 agree)."""
    return all(sa == sb for sa, sb, n in zip(a.stride(), b.stride(), a.shape) if n > 1)
