"""Registers, stack (local memory) and shared memory of every CUDA kernel in the sm_90 build of
genkernels._C_cuda, read with `cuobjdump --dump-resource-usage` (no GPU, no compile: the built module).
Printed as a table (pytest -s); fails where a kernel uses local memory it should not: only the
attention kernels keep per-thread arrays, and those are sized for the head dim's bucket
(csrc/cuda/attention_common.cuh), not for D = 256 whatever D is; the others stay within a few bytes
of stack (0 or 8 at the last count)."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from genkernels import _native

# per-thread arrays of MD accumulators: forward q, acc; backward dq kernel q, dout, acc; dk/dv kernel
# k, v, dk, dv
ATTN_ARRAYS = {"attn_fwd_kernel": 2, "attn_bwd_dq_kernel": 3, "attn_bwd_dkdv_kernel": 4}
BUCKETS = (32, 64, 128, 256)
DTYPES = {"float": 4, "double": 8, "__half": 4, "__nv_bfloat16": 4}  # element type -> accumulator bytes
OTHER_STACK = 16  # bytes of stack a kernel without per-thread arrays may use
TILE_ROWS = 16  # scores of one key tile (csrc/cuda/attention_common.cuh tile_rows), at most 16


def _cuobjdump():
    found = shutil.which("cuobjdump")
    if found:
        return found
    try:
        import triton
    except ImportError:
        return None
    bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    return str(bundled) if bundled.exists() else None


def kernel_resources():
    """{demangled kernel name: {"REG": n, "STACK": n, "SHARED": n, "LOCAL": n}} of the sm_90 code."""
    mod = _native.load("_C_cuda")
    tool = _cuobjdump()
    if mod is None or tool is None:
        pytest.skip(f"needs genkernels._C_cuda ({_native.load_error('_C_cuda')}) and cuobjdump ({tool})")
    if "90" not in mod.archs.split(","):
        pytest.skip(f"_C_cuda has no sm_90 code (archs {mod.archs})")
    dump = subprocess.run([tool, "--gpu-architecture", "sm_90", "--dump-resource-usage", mod.__file__],
                          capture_output=True, text=True, check=True).stdout
    found = re.findall(r"Function (\S+):\s*\n\s*(REG:.*)", dump)
    names = subprocess.run(["c++filt"], input="\n".join(m for m, _ in found), capture_output=True, text=True,
                           check=True).stdout.splitlines() if shutil.which("c++filt") else [m for m, _ in found]
    return {name: {k: int(v) for k, v in re.findall(r"(\w+):(\d+)", res)}
            for name, (_, res) in zip(names, found)}


def test_cuda_kernel_resources():
    res = kernel_resources()
    assert res, "no kernels in the sm_90 code"
    print(f"\n{'kernel (sm_90)':<100} {'regs':>5} {'stack':>6} {'shared':>7}")
    for name, r in sorted(res.items()):
        print(f"{name.replace('(anonymous namespace)::', '')[:100]:<100} {r['REG']:>5} {r['STACK']:>6} "
              f"{r['SHARED']:>7}")
    seen = set()
    for name, r in res.items():
        m = re.search(r"(attn_\w+_kernel)<([\w:]+), \w+, (\d+)>", name)
        if not m:
            assert r["STACK"] <= OTHER_STACK and r["LOCAL"] == 0, f"{name}: local memory {r}"
            continue
        kernel, dtype, md = m.group(1), m.group(2), int(m.group(3))
        seen.add((kernel, dtype, md))
        acc = DTYPES[dtype]
        budget = (ATTN_ARRAYS[kernel] * md + TILE_ROWS) * acc
        assert r["STACK"] <= budget, f"{name}: stack {r['STACK']} bytes > {budget} for head-dim bucket {md}"
    want = {(k, t, md) for k in ATTN_ARRAYS for t in DTYPES for md in BUCKETS}
    assert want <= seen, f"attention kernels missing: {sorted(want - seen)[:4]}"
