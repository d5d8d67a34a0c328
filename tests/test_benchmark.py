"""The benchmark core (genkernels.benchmark): what `genkernels bench` reports must be measured, not
assumed. Small and fast: nothing here times anything for its own sake."""
import inspect
import subprocess
import sys
import textwrap

import pytest
import torch

from genkernels import benchmark as gb


def _vq_quick_case():
    (case,) = gb.cases("vq_nearest", "cpu", quick=True)
    return case


def test_registered_ops_cover_every_benchmarked_op():
    assert {"group_norm_silu", "adain", "ddim_step", "attention", "vq_nearest"} <= set(gb.registered_ops())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak RSS from /proc is Linux only")
def test_peak_memory_tells_a_distance_matrix_from_a_fused_kernel():
    case = _vq_quick_case()
    M, K, _ = case.shape
    mk = M * K * 4  # one float32 M x K matrix
    eager = gb.peak_extra_bytes(case, gb.EAGER)
    assert eager is not None and eager >= 0.9 * mk, (eager, mk)
    if "genkernels[cpu]" in case.impl_names:
        ours = gb.peak_extra_bytes(case, "genkernels[cpu]")
        assert ours is not None and ours < mk / 16, (ours, mk)


def test_table_shows_peak_memory_and_failures():
    rows = gb.add_speedups([
        dict(gb.result_row(gb.EAGER, 2e-3, 10**6, 100.0, {"case": "c"}), peak_extra_bytes=64 * 2**20),
        dict(gb.result_row("genkernels[cpu]", 1e-3, 10**6, 100.0, {"case": "c"}), peak_extra_bytes=2**19),
        {"case": "c", "impl": gb.COMPILE, "error": "RuntimeError: boom"},
    ])
    table = gb.format_table(rows)
    assert "64.00 MiB" in table and "0.50 MiB" in table and "FAILED: RuntimeError: boom" in table
    assert "2.00x" in table  # genkernels vs eager


def _mmapped_bytes():
    """glibc's bytes in mmapped blocks (mallinfo2().hblkhd), or None without mallinfo2."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                   "fsmblks", "uordblks", "fordblks", "keepcost")]
    try:
        f = ctypes.CDLL(None).mallinfo2
    except AttributeError:
        return None
    f.restype = MallInfo2
    return f().hblkhd


def test_steady_allocator_keeps_mid_size_buffers_on_the_heap():
    # In a fresh process: after other tests the heap may be unable to grow in place (a mapping just
    # above it), and glibc then serves any size by mmap, whatever the threshold.
    code = inspect.getsource(_mmapped_bytes) + textwrap.dedent("""
        import torch
        from genkernels import benchmark as gb
        got = gb.steady_cpu_allocator()
        if got is None or _mmapped_bytes() is None:
            print("skip")
        else:
            assert "32 MiB" in got
            base = _mmapped_bytes()
            mid = torch.empty(4 << 20)  # 16 MiB: heap (reused across calls), not a fresh mmap
            mid_mmapped = _mmapped_bytes() - base
            big = torch.empty(16 << 20)  # 64 MiB: still a fresh mmap, as in any PyTorch process
            print(mid_mmapped, _mmapped_bytes() - base)
        """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    if out == ["skip"]:
        pytest.skip("not glibc >= 2.33: no mallopt / mallinfo2")
    mid, big = map(int, out)
    assert mid < (16 << 20)
    assert big >= (64 << 20)


def test_launch_count_sees_eager_ops_native_kernels_and_inductor_kernels():
    from genkernels import bench_cases
    from genkernels.backend import available_backends, use_backend

    x, mo = torch.randn(2, 4, 8, 8), torch.randn(4, 4, 8, 8)
    step = bench_cases._eager_cfg_ddim(0.4, 0.6, 7.5)
    assert gb.count_launches(lambda: step(x, mo), "cpu") >= 5  # guidance, x0, prev: one op each
    compiled = torch.compile(step, dynamic=False, options={"cpp.enable_kernel_profile": True})
    assert gb.count_launches(lambda: compiled(x, mo), "cpu") == 1  # inductor fuses the step
    if "cpu" in available_backends("cpu"):
        import genkernels

        with use_backend("cpu"):
            n = gb.count_launches(lambda: genkernels.ddim_step(x, mo, 0.4, 0.6, guidance_scale=7.5), "cpu")
        assert n == 1
