"""The CUDA kernels' scratch memory (issue 10): every kernel of _C_cuda / _C_cuemu takes a last tensor,
`workspace`, that genkernels/_native.py allocates with torch's allocator, its size from the kernel's
own size query (`<kernel>_workspace`, the same arguments without the workspace). Held here on the
emulated kernels (genkernels._C_cuemu, CPU tensors, the real Python side):
- each call passes a workspace of exactly the queried size, allocated through torch (the profiler's
  memory events see it inside the kernel's range);
- run on exactly that many bytes between guard bytes, each kernel writes inside them only and reaches
  both ends (the emulator fills the workspace with 0x7f bytes first), so the size asked is the size used;
- a workspace one byte short, absent or misaligned is a ValueError naming `workspace`, and nothing of
  the buffer past what was passed is touched.
"""
import pytest
import torch

import genkernels
from genkernels import _native
from cuda_emu_fixture import emulated, needs_cuemu, ran  # noqa: F401 (emulated: a fixture)

pytestmark = needs_cuemu

GUARD = 64      # guard bytes each side (keeps the workspace 64-byte aligned in torch's CPU buffer)
PATTERN = 0x5A  # the guards' bytes
POISON = 0x7F   # what the emulator writes over the workspace before the kernel runs
SCRATCH_KERNELS = {"group_norm_fwd", "group_norm_bwd", "vq_nearest", "attention_bwd"}


class _Checking:
    """The module _native calls (the fixture's _C_cuemu), checking each kernel call's workspace as the
    module docstring says; `seen` records (kernel, queried bytes, passed bytes, passed address)."""

    def __init__(self, mod):
        self._mod = mod
        self.seen = []

    def __getattr__(self, name):
        fn = getattr(self._mod, name)
        if name.endswith("_workspace") or name == "kernel_args":
            return fn
        query = getattr(self._mod, name + "_workspace")

        def call(code, ptrs, sizes, ints, floats, threads):
            args = (code, ptrs[:-1], sizes[:-1], ints, floats, threads)
            need = query(*args)
            self.seen.append((name, need, sizes[-1], ptrs[-1]))
            if need:
                self._refusals(fn, name, need, *args)
            buf = torch.full((need + 2 * GUARD,), PATTERN, dtype=torch.uint8)
            ws = buf[GUARD:GUARD + need]
            fn(code, ptrs[:-1] + [ws.data_ptr() if need else 0], sizes[:-1] + [need], ints, floats, threads)
            assert bool((buf[:GUARD] == PATTERN).all() and (buf[GUARD + need:] == PATTERN).all()), \
                f"{name} wrote outside its {need}-byte workspace"
            if need:
                assert bool((ws[:4] != POISON).any() and (ws[-4:] != POISON).any()), \
                    f"{name} asked for {need} bytes and left an end of them unwritten: {ws[:4]} ... {ws[-4:]}"

        return call

    @staticmethod
    def _refusals(fn, name, need, code, ptrs, sizes, ints, floats, threads):
        for offset, size, why in ((GUARD, need - 1, "holds"), (None, 0, "holds"), (GUARD + 4, need, "aligned")):
            buf = torch.full((need + 2 * GUARD,), PATTERN, dtype=torch.uint8)
            addr = 0 if offset is None else buf.data_ptr() + offset
            with pytest.raises(ValueError, match=rf"{name}.*`workspace`.*{why}"):
                fn(code, ptrs + [addr], sizes + [size], ints, floats, threads)
            end = GUARD if offset is None else offset + size
            assert bool((buf[:GUARD] == PATTERN).all() and (buf[end:] == PATTERN).all()), \
                f"{name}: a refused call wrote past the workspace it was given"


@pytest.fixture
def checking(emulated, monkeypatch):  # noqa: F811 (the fixture)
    mod = _Checking(_native.load("_C"))  # the fixture's _C_cuemu
    monkeypatch.setattr(_native, "load", lambda name, real=_native.load: mod if name == "_C" else real(name))
    return mod


def _x(*shape, channels_last=False, seed=0):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _group_norm(channels_last):
    def call():
        x = _x(2, 12, 5, 7, channels_last=channels_last).requires_grad_()
        w, b = _x(12, seed=1).requires_grad_(), _x(12, seed=2).requires_grad_()
        y = genkernels.group_norm_silu(x, 4, w, b)
        y.backward(_x(*y.shape, seed=3))
        return y, (x.grad, w.grad, b.grad), (x, w, b)
    return call


def _vq(cosine):
    def call():
        z, e = _x(37, 6), _x(50, 6, seed=1)
        return genkernels.vq_nearest(z, e, cosine=cosine), (), (z, e)
    return call


def _attention():
    q, k, v = (_x(2, 3, 9, 16, seed=s).requires_grad_() for s in range(3))
    out = genkernels.attention(q, k, v)
    out.backward(_x(*out.shape, seed=4))
    return out, (q.grad, k.grad, v.grad), (q, k, v)


def _ddim():
    s, m = _x(2, 4, 5, 5), _x(2, 4, 5, 5, seed=1)
    return genkernels.ddim_step(s, m, 0.5, 0.6), (), (s, m)


CASES = {
    "group_norm nchw": (_group_norm(False), {"group_norm_fwd", "group_norm_bwd"}),
    "group_norm channels_last": (_group_norm(True), {"group_norm_fwd", "group_norm_bwd"}),
    "vq l2": (_vq(False), {"vq_nearest"}),
    "vq cosine": (_vq(True), {"vq_nearest"}),
    "attention": (_attention, {"attention_fwd", "attention_bwd"}),
    "ddim_step": (_ddim, {"ddim_step"}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_call_gets_the_workspace_it_asked_for_and_uses_it(checking, case):
    fn, kernels = CASES[case]
    out, grads, inputs = fn()
    ran(*kernels)
    assert {name for name, *_ in checking.seen} == kernels
    for name, need, passed, addr in checking.seen:
        assert passed == need and (addr != 0) == (need > 0), (name, need, passed, addr)
        assert (need > 0) == (name in SCRATCH_KERNELS), (name, need)
    # the results of the guarded runs are the op's results
    outs = out if isinstance(out, tuple) else (out,)
    assert all(torch.isfinite(t.float()).all() for t in outs + tuple(grads) if t.is_floating_point())


def test_results_with_the_guarded_workspace_match_the_reference(checking):
    """The guarded runs compute the same as the reference (group_norm_silu forward and backward)."""
    y, grads, (x, w, b) = _group_norm(True)()
    xr, wr, br = (t.detach().double().requires_grad_() for t in (x, w, b))
    with genkernels.use_backend("reference"):
        yr = genkernels.group_norm_silu(xr, 4, wr, br)
        yr.backward(_x(*yr.shape, seed=3).double())
    torch.testing.assert_close(y.double(), yr, atol=1e-4, rtol=1e-4)
    for g, gr in zip(grads, (xr.grad, wr.grad, br.grad)):
        torch.testing.assert_close(g.double(), gr, atol=1e-4, rtol=1e-4)


def test_the_workspace_comes_from_torchs_allocator(checking):
    """The workspace of the size the kernel asked for is a torch allocation inside the kernel's
    profiler range `genkernels::group_norm_fwd` (so on a GPU torch.cuda's memory statistics, peak
    memory and CUDA graphs' pools see it, unlike the private cudaMemPool it replaces)."""
    x = _x(2, 12, 5, 7)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        genkernels.group_norm_silu(x, 4)
    (name, need, passed, _), = checking.seen
    assert name == "group_norm_fwd" and need > 0
    (kernel_range,) = [e for e in prof.events() if e.name == "genkernels::group_norm_fwd"]
    allocs = [(e.name, e.cpu_memory_usage) for e in kernel_range.cpu_children]
    assert ("aten::empty", need) in allocs, allocs
