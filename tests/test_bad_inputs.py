"""Bad and unusual arguments: every path (public function, torch.ops.genkernels.*, the native module
itself) refuses them with a ValueError/TypeError naming the argument, never a crash or garbage."""
import subprocess
import sys
import textwrap

import pytest
import torch

import genkernels
from genkernels import _native
from conftest import compiled_backends

ops = torch.ops.genkernels
CPU_BACKENDS = ["reference"] + compiled_backends("cpu")


def raises(exc, match, fn, *args, **kwargs):
    with pytest.raises(exc, match=match):
        fn(*args, **kwargs)


# ---------------------------------------------------------------- the registered ops check their arguments
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_registered_ops_check_arguments(backend):
    x = torch.randn(2, 4, 8, 8)
    with genkernels.use_backend(backend):
        raises(ValueError, "num_groups", ops.group_norm_silu, x, 0, None, None, 1e-5, None, None, True)
        raises(ValueError, "num_groups", ops.group_norm_silu, x, 3, None, None, 1e-5, None, None, True)
        raises(ValueError, "weight", ops.group_norm_silu, x, 2, torch.ones(1), None, 1e-5, None, None, True)
        raises(ValueError, "eps", ops.group_norm_silu, x, 2, None, None, -1.0, None, None, True)
        raises(ValueError, "style_scale", ops.adain, x, torch.ones(2, 3), torch.ones(2, 4), 1e-5)
        raises(ValueError, "model_output", ops.ddim_step, torch.randn(8, 1 << 10), torch.randn(16, 1), None,
               None, None, 0.5, 0.4, 0.0, 7.5, None, 0, False, 0)
        raises(ValueError, "prediction_type", ops.ddim_step, x, x, None, None, None, 0.5, 0.4, 0.0, None, None,
               7, False, 0)
        raises(ValueError, "kind", ops.ddim_step, x, x, None, None, None, 0.5, 0.4, 0.0, None, None, 0, False, 5)
        raises(ValueError, "D=", ops.vq_nearest, torch.randn(5, 8), torch.randn(7, 4), False)
        q = torch.randn(1, 4, 6, 8)
        raises(ValueError, "`k`", ops.attention, q, torch.randn(1, 2, 6, 8), torch.randn(1, 2, 6, 8), None, 0.3, 0)
        raises(ValueError, "key_padding_mask", ops.attention, q, q, q, torch.zeros(1, 3, dtype=torch.bool), 0.3, 0)
        out, lse = ops.attention(q, q, q, None, 0.3, 0)
        raises(ValueError, "lse", ops.attention_backward, out, q, q, q, out, lse[:, :2], None, 0.3, 0, backend)
        y, mean, rstd = ops.group_norm_silu(x, 2, None, None, 1e-5, None, None, True)
        raises(ValueError, "mean", ops.norm_backward, y, x, mean[:, :1], rstd, None, None, None, None, 2, 1e-5,
               True, True, backend)
        raises(ValueError, "num_groups", ops.norm_backward, y, x, mean, rstd, None, None, None, None, 3, 1e-5,
               True, True, backend)


def test_compiled_call_checks_arguments():
    """The fake implementations check too: torch.compile reports a bad call when it traces it."""
    f = torch.compile(lambda x: ops.group_norm_silu(x, 3, None, None, 1e-5, None, None, True)[0], fullgraph=True)
    with pytest.raises(Exception, match="num_groups"):
        f(torch.randn(2, 4, 8, 8))


# ---------------------------------------------------------------- the native side refuses out-of-bounds work
NATIVE_CASES = textwrap.dedent("""
    import torch
    from genkernels import _native
    mod = _native.load(MODULE)
    def call(kernel, tensors, ints, floats, sizes=None):
        ptrs = [0 if t is None else t.data_ptr() for t in tensors]
        sizes = sizes or [_native.nbytes(t) for t in tensors]
        if mod.kernel_args()[kernel][0][-1:] == ("workspace",):  # the CUDA kernels' scratch, last
            ptrs, sizes = ptrs + [0], sizes + [0]
        try:
            getattr(mod, kernel)(0, ptrs, sizes, ints, floats, 1)
        except ValueError as e:
            print("refused:", e)
        else:
            print("ran")
    x, y, m, r = torch.randn(2, 4, 8, 8), torch.empty(2, 4, 8, 8), torch.empty(2, 2), torch.empty(2, 2)
    call("group_norm_fwd", [x, y, None, None, None, None, m, r], [2, 4, 64, 0, 1, 1, 0], [1e-5])  # G = 0
    call("group_norm_fwd", [x, y, None, None, None, None, m, r], [2, 4, 64, 3, 1, 1, 0], [1e-5])  # 3 does not divide 4
    call("group_norm_fwd", [x, y, torch.ones(1), None, None, None, m, r], [2, 4, 64, 2, 1, 1, 0], [1e-5])  # weight [1]
    call("group_norm_fwd", [x, y, None, None, None, None, m, r], [2, 4, 65, 2, 1, 1, 0], [1e-5])  # HW too large
    call("group_norm_fwd", [x, y, None, None, None, None, m, r], [2, 4, -64, 2, 1, 1, 0], [1e-5])  # negative
    call("group_norm_fwd", [x, y, None, None, None, None, m, r], [1 << 40, 1 << 40, 64, 2, 1, 1, 0], [1e-5])  # overflow
    s, mo = torch.randn(8, 1 << 10), torch.randn(16, 1)
    call("ddim_step", [s, mo, None, None, None, torch.empty_like(s), torch.empty_like(s)],
         [8, 1 << 10, 0, 0, 0, 0, 1, -1, -1, 0, 0], [0.5, 0.4, 0.0, 7.5, 0.0])  # short model_output
    z, e, i, d = torch.randn(5, 8), torch.randn(7, 4), torch.empty(5, dtype=torch.int64), torch.empty(5)
    call("vq_nearest", [z, e, i, d], [5, 7, 8, 0], [1e-12])  # codebook of another D
    q, k, o, l = torch.randn(1, 4, 6, 8), torch.randn(1, 2, 6, 8), torch.empty(1, 4, 6, 8), torch.empty(1, 4, 6)
    st = [192, 48, 8]
    call("attention_fwd", [q, k, k, None, o, l], [1, 4, 6, 6, 8] + st * 4 + [0], [0.3])  # fewer heads in k
    call("attention_fwd", [q, q, q, torch.zeros(1, 3, dtype=torch.uint8), o, l], [1, 4, 6, 6, 8] + st * 4 + [0], [0.3])
    call("attention_fwd", [q, q, q, None, o, l], [1, 4, 6, 6, 8] + st * 4 + [0], [0.3])  # a valid call runs
""")


@pytest.mark.parametrize("module", ["_C", "_C_cuemu"])
def test_native_refuses_out_of_bounds(module):
    if _native.load(module) is None:
        pytest.skip(f"genkernels.{module} not built")
    # a subprocess: a regression here is a crash, which must not take the test run with it
    r = subprocess.run([sys.executable, "-c", NATIVE_CASES.replace("MODULE", repr(module))],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 11, r.stdout
    assert all(line.startswith("refused:") for line in lines[:-1]), r.stdout
    assert lines[-1] == "ran"
    for want in ("num_groups", "num_groups", "weight", "`x`", "negative", "overflow", "model_output", "codebook",
                 "`k`", "key_padding_mask"):
        assert want in r.stdout, (want, r.stdout)
