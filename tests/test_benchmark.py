"""The benchmark kit (genkernels.benchkit): what `genkernels bench` reports must be measured, not
assumed. Small and fast: nothing here times anything for its own sake."""
import inspect
import subprocess
import sys
import textwrap

import pytest
import torch

from genkernels import benchkit as gb


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


def test_bench_rows_carry_the_per_round_ratios(monkeypatch):
    """bench_impls gives, beside the ratio of medians, the median of the per-round ratios: rounds where a
    shared machine slowed both impls alike do not move it, and the table shows it in brackets."""
    from genkernels.benchkit import timing

    def sample(fn, device, inner):   # an impl's next scripted time (the copy mark: 1 ms)
        t = fn()
        return t if isinstance(t, float) else 1e-3

    monkeypatch.setattr(timing, "_sample", sample)
    scripted = lambda times: iter(times).__next__   # noqa: E731
    eager = scripted([2.0] * 3 + [2.0, 2.0, 6.0, 6.0, 6.0, 2.0, 2.0])   # 3 warm-up calls, then 7 rounds
    ours = scripted([1.0] * 3 + [1.0, 1.0, 3.0, 3.0, 3.0, 3.0, 3.0])    # rounds 3-5 slow for both
    rows = gb.bench_impls({gb.EAGER: eager, "genkernels[cpu]": ours}, 10**6, "cpu", budget_s=1e-9)
    row = next(r for r in rows if r["impl"] == "genkernels[cpu]")
    assert row["speedup_vs_eager"] == pytest.approx(2.0 / 3.0)   # medians 2 s and 3 s
    assert row["paired_vs_eager"] == pytest.approx(2.0)          # 2, 2, 2, 2, 2, 0.67, 0.67
    assert row["paired_vs_compile"] is None
    assert "0.67x [2.00x]" in gb.format_table(rows)
    assert timing.paired_speedup(gb.Timing.of([1.0, 2.0], 1), gb.Timing.of([1.0], 1)) is None   # other rounds


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
        from genkernels import benchkit as gb
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


def test_info_does_not_import_the_benchmark_and_cases_import_without_a_cycle():
    code = textwrap.dedent("""
        import contextlib, io, sys
        from genkernels import cli
        with contextlib.redirect_stdout(io.StringIO()) as out:
            cli.main(["info"])
        assert "driver" in out.getvalue() and "runtime" in out.getvalue(), out.getvalue()
        assert not [m for m in sys.modules if "bench" in m and m.startswith("genkernels")], sys.modules
        import genkernels.bench_cases  # first: it imports the kit, which must not import it back
        from genkernels import benchkit
        assert "vq_nearest" in benchkit.registered_ops()
        """)
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)


def test_roofline_is_the_larger_of_the_copy_and_matmul_bounds():
    # 1 MB at 100 GB/s: 10 us; 1 GFLOP at 100 GFLOP/s: 10 ms. Measured 20 ms: the matmul bounds it, 50 %.
    row = gb.result_row("genkernels[cpu]", 20e-3, 10**6, 100.0, {"case": "c", "flops": 10**9}, flop_gflops=100.0)
    assert row["roofline"] == "matmul" and row["pct_roofline"] == pytest.approx(50.0)
    assert row["pct_copy"] == pytest.approx(0.05)
    no_flops = gb.result_row("genkernels[cpu]", 20e-6, 10**6, 100.0, {"case": "c"}, flop_gflops=100.0)
    assert no_flops["roofline"] == "copy" and no_flops["pct_roofline"] == pytest.approx(50.0)
    (att,) = [c for c in gb.cases("attention", "cpu", quick=True) if c.pass_ == "fwd"]
    B, H, Lq, d = att.shape
    assert att.flops == 2 * 2 * B * H * Lq * 77 * d  # cross attention, Lk = 77: q kᵀ and p v


def test_matmul_flop_rate_is_measured():
    rate = gb.matmul_flop_rate("cpu", torch.float32, budget_s=0.05, n=128)
    assert 0.01 < rate < 1e5  # GFLOP/s: a measurement, not a constant


def test_chart_has_speedup_and_roofline_panels(tmp_path):
    pytest.importorskip("matplotlib")
    info = {"case": "attention x", "op": "attention", "pass": "fwd", "flops": 10**9}
    rows = gb.add_speedups([gb.result_row(impl, t, 10**6, 100.0, info, flop_gflops=100.0)
                            for impl, t in ((gb.EAGER, 40e-3), (gb.COMPILE, 30e-3), ("genkernels[cpu]", 20e-3))])
    meta = {"device": "cpu", "timing": "wall", "date": "2026-11-29T00:00",
            "system": {"genkernels": "0", "torch": "0", "cpu": "x", "cpu_isa": "avx2", "torch_threads": 1}}
    import matplotlib.pyplot as plt

    made = []
    real_subplots = plt.subplots

    def spy(*a, **k):
        made.append(real_subplots(*a, **k))
        return made[-1]
    plt.subplots = spy
    try:
        assert gb.write_chart(str(tmp_path / "c.png"), meta, rows) is None
    finally:
        plt.subplots = real_subplots
    axes = made[0][1]
    titles = [ax.get_title() for ax in axes.flat]
    assert titles == ["attention fwd: speed-up over eager", "attention fwd: speed-up over torch.compile",
                      "attention fwd: % of roofline"]
    heights = [[round(p.get_height(), 3) for p in ax.patches] for ax in axes.flat]
    assert heights == [[1.333, 2.0], [0.75, 1.5], [25.0, 33.333, 50.0]]
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_stylegan_cases_include_the_r1_step_that_compile_can_run():
    # the R1-only critic step is the training step with a torch.compile figure (the path-length
    # phase cannot be compiled); cases are described on the meta device, nothing is built here
    shapes = [c.shape for c in gb.cases("stylegan", "cpu", quick=False, reference=True)]
    assert shapes == ["synthesis_64", "train_step_r1_64", "train_step_r1_pl_64", "synthesis_256"]
