"""tests/op_calls.py drives compute-sanitizer on a GPU and the sm_90 compile check: every call in it
must run (a broken call there would only show up on a lent GPU, whose minutes are scarce)."""
import pytest
import torch

import genkernels
from conftest import compiled_backends
from op_calls import op_calls


@pytest.mark.parametrize("backend", ["reference"] + [b for b in compiled_backends("cpu") if b != "triton"])
def test_every_op_call_runs(backend):
    with genkernels.use_backend(backend):
        for label, fn in op_calls("cpu", torch.float32).items():
            fn()
