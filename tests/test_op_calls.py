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


def test_triton_launches_under_the_tensors_device(monkeypatch):
    """ops/_common.launch makes the first tensor's CUDA device current around a Triton launch and
    restores the caller's (no GPU here: the device exchange is recorded, the tensor stands in)."""
    import sys
    import types
    from typing import NamedTuple

    from genkernels.ops._common import launch

    current, seen = [0], []

    def exchange(idx):
        prev, current[0] = current[0], idx
        return prev

    monkeypatch.setattr(torch.cuda, "_exchange_device", exchange)
    monkeypatch.setattr(torch.cuda, "_maybe_exchange_device", exchange)
    fake = types.ModuleType("genkernels.triton.fake_family")
    fake.fake_kernel = lambda x, n: seen.append((x.device, n, current[0]))
    monkeypatch.setitem(sys.modules, "genkernels.triton.fake_family", fake)

    class OnCuda1:  # a stand-in for a tensor on cuda:1
        device = torch.device("cuda", 1)

    class Args(NamedTuple):
        x: object
        n: int

    Args.FAMILY, Args.KERNEL = "fake_family", "fake_kernel"
    launch("triton", Args(OnCuda1(), 3), torch.float32)
    assert seen == [(torch.device("cuda", 1), 3, 1)]  # ran with cuda:1 current
    assert current == [0]  # and the caller's device is back


def test_module_parameters_take_the_eager_path():
    """nn.Parameter (its own __torch_function__ disabled) is a plain tensor to the ops' eager path: a
    module's call records the lightweight autograd.Function, not the dispatcher's autograd node."""
    from genkernels.nn.norm import GroupNormSiLU

    m = GroupNormSiLU(2, 4)
    y = m(torch.randn(1, 4, 2, 3))
    assert type(y.grad_fn).__name__ == "group_norm_silu_eagerBackward"
    y.sum().backward()
    assert m.weight.grad is not None and m.bias.grad is not None
