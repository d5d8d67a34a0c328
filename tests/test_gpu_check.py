"""bench/gpu_check.sh after a failed build, dry-run without a GPU in a copy of the tree (the build step
removes the tree's native modules): the tree's old modules are gone, `genkernels info` reports this
tree's modules as not loaded (not another checkout's), one line says the CUDA-backend checks are
skipped, the GPU steps are skipped one by one (no GPU), the wheel too (no build), and the summary starts
with the failed build. A run costs about 15 s of CPU (the script's versions and info steps), hence
`long`."""
import os
import shutil
import subprocess
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.long
def test_failed_build_is_unambiguous(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("with a GPU the script runs every check: run it as such (DEVELOPERS.md)")
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    tree = tmp_path / "tree"
    for f in files:
        if os.path.isfile(os.path.join(REPO, f)):
            os.makedirs(tree / os.path.dirname(f), exist_ok=True)
            shutil.copy2(os.path.join(REPO, f), tree / f)
    stale = tree / "genkernels" / "_C.stale-build.so"  # what an earlier build left (any _C.*.so)
    stale.write_bytes(b"not this build's")
    env = dict(os.environ, GPU_CHECK_BUILD="always", GPU_CHECK_BUILD_LIMIT="1", OUT=str(tmp_path / "out"),
               PYTHON=sys.executable)
    r = subprocess.run(["bash", str(tree / "bench" / "gpu_check.sh")], env=env, capture_output=True, text=True,
                       timeout=600)
    log = r.stdout
    assert r.returncode == 1, log[-3000:]
    assert not stale.exists()
    assert "build sm_90] FAILED: TIMED OUT after 1s" in log
    assert log.count("CUDA-backend checks SKIPPED") == 1
    assert f"genkernels._C: not loaded: ModuleNotFoundError: genkernels._C is not in {tree}/genkernels" in log
    assert "genkernels._C_cuda: not loaded" in log
    summary = log[log.index("=== summary"):]
    assert summary.splitlines()[1].startswith("  BUILD FAILED: build sm_90: TIMED OUT after 1s"), summary
    assert summary.splitlines()[2].startswith("  NO GPU: a dry run"), summary
    # without a GPU each GPU step is skipped by name and the run goes on to the end
    for name in ("one call per op", "gpu tests", "compute-sanitizer memcheck", "cuda graph capture",
                 "bench cuda (headline cases)"):
        assert f"  skipped  {name} (no GPU)" in summary, summary
    assert "  skipped  wheel (build sm_90 failed)" in summary, summary
    assert "exit status 1" in summary
    assert (tmp_path / "out" / "gpu_check.log").read_text() == log
