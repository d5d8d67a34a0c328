"""The CUDA emulator (csrc/cuda_emu/emu.h) is strict where a GPU is: seeded bugs in small CUDA-style
kernels (csrc/cuda_emu/seeded.cpp, in genkernels._C_cuemu) fail loudly, their correct variants pass,
and the real kernels give the same results when blocks run concurrently (GK_EMU_WORKERS)."""
import pytest
import torch

import genkernels
from genkernels import _native
from cuda_emu_fixture import emulated  # noqa: F401  (a fixture)
from test_cuda_emulated import randn, run

EMU = _native.load("_C_cuemu")
pytestmark = pytest.mark.skipif(EMU is None, reason=f"genkernels._C_cuemu not built ({_native.load_error('_C_cuemu')})")


def seeded(case, out, *ints, inp=None):
    EMU.seeded(case, out.data_ptr(), 0 if inp is None else inp.data_ptr(), list(ints))
    return out


def refused(match, *args, **kw):
    with pytest.raises(RuntimeError, match=match):
        seeded(*args, **kw)


# ------------------------------------------------------------------------------------ launch limits
@pytest.mark.parametrize("grid,block,smem,opt_in,match", [
    ((1, 65536, 1), (32, 1, 1), 0, -1, r"grid \(1, 65536, 1\): y and z are limited to 65535"),
    ((1, 1, 65536), (32, 1, 1), 0, -1, r"y and z are limited to 65535"),
    ((2 ** 31, 1, 1), (32, 1, 1), 0, -1, r"x over 2\^31-1"),
    ((0, 1, 1), (32, 1, 1), 0, -1, r"empty grid"),
    ((1, 1, 1), (1025, 1, 1), 0, -1, r"limits are x, y <= 1024, z <= 64"),
    ((1, 1, 1), (1, 1, 65), 0, -1, r"limits are x, y <= 1024, z <= 64"),
    ((1, 1, 1), (64, 32, 1), 0, -1, r"over 1024 threads"),
    ((1, 1, 1), (32, 1, 1), 48 * 1024 + 4, -1, r"without cudaFuncSetAttribute"),
    ((1, 1, 1), (32, 1, 1), 64 * 1024, 60 * 1024, r"without cudaFuncSetAttribute"),
    ((1, 1, 1), (32, 1, 1), 227 * 1024 + 4, -1, r"over sm_90's 232448"),
])
def test_launch_outside_cuda_limits_refused(grid, block, smem, opt_in, match):
    out = torch.zeros(1)
    refused("emulated CUDA launch refused.*" + match, "launch", out, *grid, *block, smem, opt_in)
    assert out.item() == 0  # nothing ran


@pytest.mark.parametrize("grid,block,smem,opt_in", [
    ((1, 3, 2), (32, 1, 1), 0, -1),
    ((1, 1, 1), (1024, 1, 1), 0, -1),
    ((1, 1, 1), (2, 8, 64), 0, -1),
    ((1, 1, 1), (32, 1, 1), 48 * 1024, -1),
    ((1, 1, 1), (32, 1, 1), 227 * 1024, 227 * 1024),
])
def test_launch_at_cuda_limits_runs(grid, block, smem, opt_in):
    assert seeded("launch", torch.zeros(1), *grid, *block, smem, opt_in).item() == 1


def test_opt_in_over_the_limit_fails():
    with pytest.raises(RuntimeError, match="cudaFuncSetAttribute"):
        seeded("launch", torch.zeros(1), 1, 1, 1, 32, 1, 1, 0, 227 * 1024 + 1)


# ------------------------------------------------------------------------------------ shared memory
def test_static_shared_memory_is_found():
    # shared.ld gathered the kernels' __shared__ statics: without them nothing would be filled
    assert EMU.shared_bytes >= 64 * 4


@pytest.mark.parametrize("case,ints", [("shared_sum", (3,)), ("dynamic_sum", (3, 64))])
def test_uninitialised_shared_memory_reads_garbage(case, ints):
    blocks = ints[0]
    good = seeded(case, torch.zeros(blocks), *ints, 64)
    assert good.tolist() == [sum(range(64))] * blocks
    # BUG: the block writes half of the array and sums all of it; zero-filled memory would hide it
    bad = seeded(case, torch.zeros(blocks), *ints, 32)
    assert bad.isnan().all(), bad


# ------------------------------------------------------------------------------------ warp masks
def test_warp_ops_with_correct_masks():
    lanes = torch.arange(32.0)
    assert seeded("warp", torch.zeros(32), 0).tolist() == [lanes.sum().item()] * 32
    half = seeded("warp", torch.zeros(32), 1)
    assert half[:16].tolist() == [lanes[:16].sum().item()] * 16 and torch.equal(half[16:], lanes[16:])
    assert seeded("warp", torch.zeros(32), 5).tolist() == [1.0] * 32  # ballot of the even lanes
    # divergent halves, each with its own mask, in flight together
    src = torch.cat([torch.arange(16) ^ 1, 16 + ((torch.arange(16) ^ 2))]).float()
    assert torch.equal(seeded("warp", torch.zeros(32), 7), lanes + src)


@pytest.mark.parametrize("variant,match", [
    (2, r"__shfl_xor_sync with mask 0x0000ffff, which does not include the calling lane"),
    # lanes 16-31 leave before or after lanes 0-15 arrive: either is reported
    (3, r"(left the kernel while lanes 0x[0-9a-f]{8} wait for it in __shfl_xor_sync with mask 0xffffffff"
        r"|__shfl_xor_sync with mask 0xffffffff: lanes 0x[0-9a-f]{8} have left the kernel)"),
    (4, r"__shfl_xor_sync with mask 0x0000ffff reads lane (1[6-9]|2\d|3[01]), which is not in the mask"),
    (6, r"deadlock: .*16 at __syncthreads; warp 0: lanes 0x0000ffff in __shfl_xor_sync"),
    # the halves meet in the op, or some of lanes 8-15 have finished (left) before the upper half is done
    (8, r"(__shfl_xor_sync with mask .* \(every lane of a mask must make the same call\)"
        r"|__shfl_xor_sync with mask 0xffffff00: lanes 0x[0-9a-f]{8} have left the kernel"
        r"|left the kernel while lanes 0x[0-9a-f]{8} wait for it in __shfl_xor_sync with mask 0xffffff00)"),
])
def test_bad_warp_mask_fails(variant, match):
    for _ in range(20):  # the lanes' interleaving differs from run to run
        refused(r"emulated CUDA, block \(0,0,0\) thread \(\d+,0,0\): " + match, "warp", torch.zeros(32), variant)


# ------------------------------------------------------------------------------------ alignment
def test_misaligned_vector_load_fails():
    inp = torch.arange(4 * 8 + 4, dtype=torch.float32)
    assert inp.data_ptr() % 16 == 0
    good = seeded("float4", torch.zeros(8), 8, 0, inp=inp)
    assert good.tolist() == [float(16 * i + 6) for i in range(8)]
    with pytest.raises(RuntimeError, match=r"misaligned address 0x[0-9a-f]+ for type .*float4.*"
                                           r"which needs 16-byte alignment \(.*seeded.cpp:\d+\)"):
        seeded("float4", torch.zeros(8), 8, 1, inp=inp)


# ------------------------------------------------------------------------------------ block order
def test_block_order_dependence_shows():
    # BUG: block b reads block b-1's output; in ascending order it would give 1, 2, ..., 6
    out = seeded("chain", torch.zeros(6), 6)
    assert out.tolist() != [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


@pytest.mark.parametrize("workers", ["1", "4"])
def test_concurrent_blocks_same_result(monkeypatch, workers):
    monkeypatch.setenv("GK_EMU_WORKERS", workers)
    inp = torch.arange(5 * 64, dtype=torch.float32)
    out = seeded("scale", torch.zeros(5 * 64), 5, 64, inp=inp)
    assert torch.equal(out, 2 * inp + torch.arange(5.0).repeat_interleave(64))


def test_real_kernels_concurrent_blocks_same_result(emulated, monkeypatch):  # noqa: F811
    """A kernel without shared memory (ddim_step) runs its blocks concurrently, one with shared memory
    (attention forward) one at a time; both match the sequential run bit for bit."""
    x, m = randn(2, 4, 8, 16), randn(2, 4, 8, 16, seed=1)
    q, k, v = randn(2, 2, 5, 8), randn(2, 2, 7, 8, seed=1), randn(2, 2, 7, 8, seed=2)

    def both():
        step = run(emulated, lambda x, m: genkernels.ddim_step(x, m, 0.4, 0.85), [x.float(), m.float()], grad=False)
        att = run(emulated, genkernels.attention, [q.float(), k.float(), v.float()], grad=False)
        return step[0] + att[0]

    seq = both()
    monkeypatch.setenv("GK_EMU_WORKERS", "3")
    for a, b in zip(both(), seq):
        assert torch.equal(a, b)
