"""pytest-benchmark configuration for bench/ (used only when pytest is pointed at this directory;
the test suite's testpaths is tests/, so a plain `pytest` never runs benchmarks).

    pytest bench/ --benchmark-only --benchmark-json=bench/out/bench.json
    pytest bench/ --benchmark-only --bench-device cuda --bench-quick

Options: --bench-device cpu|cuda (default: cuda if present), --bench-quick (headline case only),
--bench-reference (also time the eager `reference` backend), --bench-dtypes float16,float32,
--bench-budget SECONDS (timed seconds per test, default 0.5).
"""
from __future__ import annotations

import pytest
import torch

from _harness import RESULTS, bench_items
from genkernels import benchkit as gb
from genkernels.sysinfo import system_info


def pytest_addoption(parser):
    g = parser.getgroup("genkernels bench")
    g.addoption("--bench-device", default=None, help="cpu or cuda (default: cuda if available)")
    g.addoption("--bench-quick", action="store_true", help="only the headline case of each op")
    g.addoption("--bench-reference", action="store_true", help="also time the `reference` backend")
    g.addoption("--bench-dtypes", default=None, help="comma-separated dtypes to keep, e.g. float16,float32")
    g.addoption("--bench-budget", type=float, default=0.5, help="timed seconds per test (default 0.5)")


def pytest_collect_file(file_path, parent):
    """Collect bench_*.py here (python_files only matches test_*.py); files named on the command line
    are already collected by pytest itself."""
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and not parent.session.isinitpath(file_path)):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def _device(config) -> torch.device:
    d = config.getoption("--bench-device")
    if d is None:
        d = "cuda" if torch.cuda.is_available() else "cpu"
    if torch.device(d).type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("--bench-device cuda: no CUDA device is available")
    return torch.device(d)


def pytest_generate_tests(metafunc):
    """Parametrises `bench_item` with every (case, impl) of the module's OP."""
    if "bench_item" not in metafunc.fixturenames:
        return
    op = getattr(metafunc.module, "OP", None)
    if op is None:
        raise pytest.UsageError(f"{metafunc.module.__name__}: a bench module must define OP = '<op name>'")
    cfg = metafunc.config
    dtypes = cfg.getoption("--bench-dtypes")
    items = bench_items(op, _device(cfg), cfg.getoption("--bench-quick"), cfg.getoption("--bench-reference"),
                        dtypes.split(",") if dtypes else None)
    metafunc.parametrize("bench_item", items, ids=[i.id for i in items])


@pytest.fixture(scope="session")
def copy_bandwidth():
    """(nbytes, device) -> GB/s of a dst.copy_(src) of that size, measured once per session per key
    (per size: on CPU a 10 MB tensor can be cache-resident, a 40 MB one not)."""
    cache = {}

    def get(nbytes: int, device) -> float:
        key = (int(nbytes), str(torch.device(device)))
        if key not in cache:
            cache[key] = gb.copy_bandwidth(nbytes, device)
        return cache[key]
    return get


@pytest.fixture(scope="session")
def bench_budget(pytestconfig) -> float:
    return pytestconfig.getoption("--bench-budget")


def pytest_configure(config):
    # same allocator behaviour as `genkernels bench` (see gb.steady_cpu_allocator)
    d = config.getoption("--bench-device", None)
    if d == "cpu" or (d is None and not torch.cuda.is_available()):
        config._genkernels_allocator = gb.steady_cpu_allocator()


def pytest_benchmark_update_machine_info(config, machine_info):
    try:
        machine_info["genkernels"] = system_info(_device(config))
        machine_info["genkernels"]["cpu_allocator"] = getattr(config, "_genkernels_allocator", None) or "default"
    except Exception as e:  # never lose a benchmark run over metadata
        machine_info["genkernels"] = f"system_info failed: {e}"


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Adds speedup_vs_eager / speedup_vs_compile (same case, same run) to each extra_info."""
    rows = [b["extra_info"] for b in output_json.get("benchmarks", []) if "median_s" in b.get("extra_info", {})]
    gb.add_speedups(rows)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if RESULTS:
        terminalreporter.write_sep("=", "genkernels: bandwidth and speedups (medians, this run)")
        terminalreporter.write_line(gb.format_table(gb.add_speedups([dict(r) for r in RESULTS])))
