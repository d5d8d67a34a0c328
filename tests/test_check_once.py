"""Every entry point of every op checks its arguments exactly once per call (issue 10: the public
function converts its arguments, the registered op's check runs on whichever path the call takes):
plain eager, eager autograd, torch.func, a TorchDispatchMode, torch.ops.genkernels.* called directly,
and a torch.compile'd call after compilation."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import genkernels as gk
from python_calls import profiled

ops = torch.ops.genkernels
OPS_DIR = gk.ops.__path__[0]


class PassThrough(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def checks(fn) -> int:
    """Calls fn(); returns how many argument checks ran: calls of a genkernels/ops function named
    check* / _check* made while no other such call was running (the nested helpers of one check
    count as that check)."""
    depth, count = [0], [0]

    def is_check(frame):
        code = frame.f_code
        return code.co_filename.startswith(OPS_DIR) and code.co_name.lstrip("_").startswith("check")

    def profile(frame, event, _arg):
        if event == "call" and is_check(frame):
            count[0] += depth[0] == 0
            depth[0] += 1
        elif event == "return" and is_check(frame):
            depth[0] -= 1

    profiled(fn, profile)
    return count[0]


def calls(requires_grad=False):
    """{op: (public call, registered-op call)} on small CPU float64 inputs."""
    def t(*shape):
        return torch.randn(*shape, dtype=torch.float64, requires_grad=requires_grad)

    x, w, s = t(2, 4, 3, 3), t(4), t(2, 4)
    q, k = t(1, 2, 3, 8), t(1, 2, 5, 8)
    z, cb = t(6, 4), t(5, 4)
    return {
        "group_norm_silu": (lambda: gk.group_norm_silu(x, 2, w, w),
                            lambda: ops.group_norm_silu(x, 2, w, w, 1e-5, None, None, True)),
        "adain": (lambda: gk.adain(x, s, s), lambda: ops.adain(x, s, s, 1e-5)),
        "attention": (lambda: gk.attention(q, k, k), lambda: ops.attention(q, k, k, None, 0.5, 0, False)),
        "vq_nearest": (lambda: gk.vq_nearest(z, cb), lambda: ops.vq_nearest(z.detach(), cb.detach(), False)),
        "ddim_step": (lambda: gk.ddim_step(x, x, 0.5, 0.6),
                      lambda: ops.ddim_step(x, x, None, None, None, 0.5, 0.6, 0.0, None, None, 0, False, 0)),
        "ddpm_step": (lambda: gk.ddpm_step(x, x, 0.5, 0.6),
                      lambda: ops.ddim_step(x, x, None, None, None, 0.5, 0.6, 0.0, None, None, 0, False, 1)),
    }


def in_mode(fn):
    def run():
        with PassThrough():
            fn()
    return run


@pytest.mark.parametrize("name", list(calls()))
def test_every_entry_point_checks_once(name):
    public, registered = calls()[name]
    public_grad, registered_grad = calls(requires_grad=True)[name]
    got = {"eager": checks(public), "eager autograd": checks(public_grad),
           "dispatch mode": checks(in_mode(public)), "torch.ops": checks(registered),
           "torch.ops autograd": checks(registered_grad), "torch.ops in a dispatch mode": checks(in_mode(registered))}
    assert got == dict.fromkeys(got, 1)


def test_torch_func_and_compiled_calls_check_once():
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    assert checks(lambda: torch.func.grad(lambda t: gk.group_norm_silu(t, 2).sum())(x)) == 1
    f = torch.compile(lambda t: gk.group_norm_silu(t, 2), backend="eager", fullgraph=True)
    f(x)  # compiles
    assert checks(lambda: f(x)) == 1  # the compiled graph calls the registered op, which checks


def test_a_bad_argument_is_refused_on_every_entry_point():
    """(the check is not skipped anywhere: each path refuses num_groups=3 for 4 channels)"""
    x = torch.randn(2, 4, 3, 3)
    for fn in (lambda: gk.group_norm_silu(x, 3), in_mode(lambda: gk.group_norm_silu(x, 3)),
               lambda: ops.group_norm_silu(x, 3, None, None, 1e-5, None, None, True),
               lambda: torch.func.grad(lambda t: gk.group_norm_silu(t, 3).sum())(x)):
        with pytest.raises(ValueError, match="num_groups"):
            fn()
