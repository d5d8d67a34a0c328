"""use_backend is thread-local (contextvars); set_backend is process-wide."""
import threading

import pytest
import torch

import genkernels
from genkernels import backend


def test_overlapping_blocks_in_threads_do_not_leak():
    barrier = threading.Barrier(2)
    seen, errors = {}, []

    def worker(name, exit_first):
        try:
            with genkernels.use_backend(name):
                barrier.wait()  # both threads are inside their blocks
                seen[name, "inside"] = genkernels.current_backend()
                if not exit_first:
                    barrier.wait()  # the other thread leaves first
            if exit_first:
                barrier.wait()
            seen[name, "after"] = genkernels.current_backend()
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    before = genkernels.current_backend()
    threads = [threading.Thread(target=worker, args=("reference", True)),
               threading.Thread(target=worker, args=("cpu", False))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert seen["reference", "inside"] == "reference" and seen["cpu", "inside"] == "cpu"
    assert seen["reference", "after"] == before and seen["cpu", "after"] == before
    assert genkernels.current_backend() == before


def test_block_is_thread_local_and_set_backend_is_process_wide():
    other, base = {}, genkernels.current_backend()
    with genkernels.use_backend("reference"):
        t = threading.Thread(target=lambda: other.setdefault("b", genkernels.current_backend()))
        t.start()
        t.join()
        assert genkernels.current_backend() == "reference"
    assert other["b"] == base
    genkernels.set_backend("reference")
    t = threading.Thread(target=lambda: other.__setitem__("b", genkernels.current_backend()))
    t.start()
    t.join()
    assert other["b"] == "reference" == genkernels.current_backend()
    with genkernels.use_backend("cpu"):
        assert genkernels.current_backend() == "cpu"
    assert genkernels.current_backend() == "reference"
    with pytest.raises(ValueError, match="unknown backend"):
        genkernels.set_backend("fast")


def test_ops_run_on_the_threads_backend():
    """Each thread's calls resolve to its own backend (the reference and cpu results differ in rounding
    only; what is checked is which one ran, through the profiler-free resolve)."""
    results = {}

    def worker(name):
        with genkernels.use_backend(name):
            results[name] = backend.resolve("group_norm_silu", torch.device("cpu"))
            genkernels.group_norm_silu(torch.randn(2, 4, 3, 3), 2)

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("reference", "cpu")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {"reference": "reference", "cpu": "cpu"}
