"""The benchmark core (genkernels.benchmark): what `genkernels bench` reports must be measured, not
assumed. Small and fast: nothing here times anything for its own sake."""
import sys

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


def test_steady_allocator_is_reported_or_declined():
    got = gb.steady_cpu_allocator()
    assert got is None or "mallopt" in got
    x = torch.empty(1 << 22)  # allocation still works afterwards
    x.fill_(1.0)
    assert float(x.sum()) == float(1 << 22)
