#!/usr/bin/env bash
# The one prepared script for a lent GPU (H100/H200, no network). In this order (issue 16):
#   versions, build for sm_90, `genkernels info` (driver, runtime, device), one call per op on each GPU
#   backend, the GPU test suite, compute-sanitizer memcheck / racecheck / synccheck / initcheck on a small
#   case of every CUDA kernel, a CUDA-graph capture of every op, the benchmarks, and the wheel built on
#   the CPU machine installed next to this machine's torch and next to a second torch version (a torch
#   wheel already on the machine; without one the script says so and skips that step).
# Runs from anywhere; works in the repository root.
#
#   OUT=/some/dir bash bench/gpu_check.sh
#
# Writes $OUT/gpu_check.log (everything), $OUT/bench_cuda*.json/.png, $OUT/pytest_gpu.xml. Every step has
# its own time limit and the whole script stops before GPU_CHECK_BUDGET seconds (default 450); a failing
# step is reported and later steps still run, except without a GPU: the first GPU step fails and the
# script stops there (a dry run: GPU_CHECK_BUILD=always builds and runs `info` first; run it in a clone,
# as the build replaces the tree's native modules).
# genkernels is always this tree's (cwd and PYTHONPATH; genkernels._native loads native modules only from
# the package's own directory). The build first removes the tree's _C and _C_cuda, so that a failed (or
# timed-out) build leaves none: then `info` shows them not loaded, the CUDA-backend checks are skipped
# (one line says so), the Triton checks still run, and the summary starts with the failed build.
# Exit status: 0 all steps passed, 1 a step failed (or no GPU reached the GPU steps).
#
# Environment: PYTHON (default: the first of python, python3 that imports torch),
# GPU_CHECK_BUDGET (seconds), GPU_CHECK_BUILD=always (build even without a GPU: compile check),
# GPU_CHECK_BUILD_LIMIT (seconds for the build step, default 180; a dry run on 2 loaded cores needs more),
# GPU_CHECK_ARCHS (default 90), GPU_CHECK_WHEEL (default: the newest dist/genkernels-*.whl),
# GPU_CHECK_TORCH_WHEEL (the second torch; default: a torch-*.whl in .whl/ or dist/ of another version).
set -u -o pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
REPO=$(pwd)
OUT=${OUT:-$REPO/bench/results/gpu_check}
mkdir -p "$OUT" "$REPO/bench/results"
OUT=$(cd "$OUT" && pwd)
LOG="$OUT/gpu_check.log"
exec > >(tee "$LOG") 2>&1
TEE_PID=$!

START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET:-450}
DEADLINE=$((START + BUDGET))
ARCHS=${GPU_CHECK_ARCHS:-90}
PASSED=() FAILED=() SKIPPED=()
STEP_RC=        # the exit status of the last step run ("" when it was skipped)
BUILD_FAILED=   # the build step's failure, for the summary

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for cand in python python3; do
    if command -v "$cand" >/dev/null && "$cand" -c "import torch" 2>/dev/null; then PY=$(command -v "$cand"); break; fi
  done
fi
PY=${PY:-python3}
export PY REPO ARCHS OUT
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"   # the in-place build is imported from the tree
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
unset TRITON_INTERPRET GENKERNELS_BACKEND                # real GPU runs, backend "auto"
export MPLBACKEND=Agg

# step NAME LIMIT_SECONDS CMD...: runs CMD under `timeout`, clamped to the time left; records the result.
step() {
  local name=$1 limit=$2; shift 2
  local left=$((DEADLINE - $(date +%s) - 5))
  STEP_RC=
  if [ "$left" -lt 15 ]; then
    echo "=== [$name] SKIPPED: out of time (${left}s left of ${BUDGET}s)"
    SKIPPED+=("$name (out of time)"); return 0
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo
  echo "=== [$name] limit ${limit}s, $(date +%T): $*"
  local t0 rc TIMEFORMAT="=== [$name] cpu %0U s user + %0S s sys"   # what `time` prints (children included)
  t0=$(date +%s)
  if declare -F "$1" >/dev/null; then   # a function of this script: run it in a child bash (with the others)
    time timeout --signal=TERM --kill-after=15 "$limit" bash -c "$(declare -f); $(printf '%q ' "$@")"
  else
    time timeout --signal=TERM --kill-after=15 "$limit" "$@"
  fi
  rc=$?
  STEP_RC=$rc
  local dt=$(( $(date +%s) - t0 ))
  if [ "$rc" -eq 0 ]; then
    echo "=== [$name] OK (${dt}s)"; PASSED+=("$name (${dt}s)")
  else
    local why="exit $rc"; { [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; } && why="TIMED OUT after ${limit}s"
    echo "=== [$name] FAILED: $why (${dt}s)"; FAILED+=("$name: $why")
  fi
  return 0
}

skip() { echo; echo "=== [$1] SKIPPED: $2"; SKIPPED+=("$1 ($2)"); }

# The cores this process may use (nproc alone answers OMP_NUM_THREADS, which a caller may have set to 1).
cores() { env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc; }

versions() {
  echo "--- nvidia-smi"
  if command -v nvidia-smi >/dev/null; then nvidia-smi || true; else echo "nvidia-smi: not found"; fi
  echo "--- tools"
  echo "python: $PY"
  "$PY" - <<'EOF'
import sys, platform
print("python", sys.version.split()[0], platform.platform())
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
          "devices", torch.cuda.device_count())
    if torch.cuda.is_available():
        print("gpu", torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))
except Exception as e:
    print("torch: not importable:", e)
for m in ("triton", "pybind11", "pytest", "pytest_benchmark", "tqdm", "matplotlib", "numpy"):
    try:
        mod = __import__(m)
        print(m, getattr(mod, "__version__", "?"))
    except Exception as e:
        print(m, "not importable:", type(e).__name__)
EOF
  for t in nvcc cmake ninja compute-sanitizer; do
    if command -v "$t" >/dev/null; then echo "$t: $("$t" --version 2>&1 | grep -iE 'release|version|^[0-9]' | head -1)"
    else echo "$t: not found on PATH"; fi
  done
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), $(cores) cores"
  return 0
}

build() {
  # No module of an earlier build may pass for this one's (rm: a module already loaded somewhere stays
  # mapped there).
  rm -fv "$REPO"/genkernels/_C.*.so "$REPO"/genkernels/_C_cuda.*.so
  # setup.py drives CMake+ninja; build_ext --inplace needs no network (pip's build isolation would).
  GENKERNELS_CUDA=1 GENKERNELS_CUDA_EMU=0 GENKERNELS_CUDA_ARCHS="$ARCHS" GENKERNELS_JOBS="$(cores)" \
    GENKERNELS_BUILD_DIR="$REPO/build/gpu-check-sm$ARCHS" \
    "$PY" setup.py -q build_ext --inplace || return 1
  ls -l "$REPO"/genkernels/_C*.so
  # from this tree, not an installed genkernels: an editable install's finder supplies the extension
  # modules a tree lacks (a dry run in a git worktree imported the main checkout's _C_cuda that way)
  "$PY" -c "import os, genkernels._C as c, genkernels._C_cuda as m
print(m.__file__, 'archs', m.archs, 'runtime', m.runtime_version)
stray = [x.__file__ for x in (c, m) if not x.__file__.startswith(os.environ['REPO'] + '/genkernels/')]
assert not stray, f'extension modules from outside {os.environ[\"REPO\"]}: {stray}'"
}

collect() { cp -f "$REPO"/bench/results/bench_cuda*.json "$REPO"/bench/results/bench_cuda*.png "$OUT"/ 2>/dev/null; return 0; }

export GPU_CALLS="$REPO/bench/gpu_calls.py"   # one call per op per GPU backend (GK_GRAPH=1: in a CUDA graph)

# sanitize TOOL [BACKENDS]: compute-sanitizer TOOL over one call per op (small cases).
sanitize() {
  local cs
  cs=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
  if [ -z "$cs" ]; then echo "compute-sanitizer: not found"; return 1; fi
  # One cudaMalloc per tensor, so an out-of-bounds access cannot land inside a pooled block.
  GK_BACKENDS=${2:-$GK_BACKENDS} PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$cs" --tool "$1" --error-exitcode 3 \
    --print-limit 20 "$PY" "$GPU_CALLS"
}

# The wheel built on the CPU machine (`pip wheel --no-deps -w dist .`), installed in a throwaway venv that
# sees this machine's torch (or, given a torch wheel, that torch installed over it), imported from outside
# the repository, one call per op.
wheel_check() {
  local torch_whl=${1:-}
  local whl=${GPU_CHECK_WHEEL:-$(ls -t "$REPO"/dist/genkernels-*.whl 2>/dev/null | head -1)}
  if [ -z "$whl" ] || [ ! -f "$whl" ]; then echo "no wheel (dist/genkernels-*.whl or GPU_CHECK_WHEEL)"; return 1; fi
  local venv
  venv=$(mktemp -d /tmp/gk_wheel_XXXX)
  "$PY" -m venv --system-site-packages "$venv" && "$venv/bin/pip" install -q --no-deps --no-index "$whl" || return 1
  if [ -n "$torch_whl" ]; then "$venv/bin/pip" install -q --no-deps --no-index "$torch_whl" || return 1; fi
  (cd "$venv" && env -u PYTHONPATH REPO="$REPO" "$venv/bin/python" -c "import genkernels, torch; \
print('wheel genkernels from', genkernels.__file__, 'torch', torch.__version__, 'from', torch.__file__)" && \
    env -u PYTHONPATH REPO="$REPO" "$venv/bin/python" "$GPU_CALLS")
}

# A torch wheel of another version than this machine's, for wheel_check. The GPU machine is offline: one
# must be there already (GPU_CHECK_TORCH_WHEEL, or .whl/ or dist/ of the repository).
second_torch_wheel() {
  local have cand
  have=$("$PY" -c "import torch; print(torch.__version__.split('+')[0])" 2>/dev/null)
  for cand in ${GPU_CHECK_TORCH_WHEEL:-} "$REPO"/.whl/torch-*.whl "$REPO"/dist/torch-*.whl; do
    [ -f "$cand" ] || continue
    case "$(basename "$cand")" in "torch-$have"-*|"torch-$have+"*) continue ;; esac
    echo "$cand"; return 0
  done
  return 1
}

# First GPU step without a GPU: report it clearly and stop (a dry run ends here).
stop_without_gpu() {
  if [ "$HAVE_GPU" != 1 ]; then
    echo; echo "!!! stopping after [$1]: no GPU on this machine; the later steps need one"
    SKIPPED+=("everything after $1 (no GPU)")
    finish
  fi
}

finish() {
  echo
  echo "=== summary ($(( $(date +%s) - START ))s of ${BUDGET}s)"
  [ -n "$BUILD_FAILED" ] && echo "  BUILD FAILED: $BUILD_FAILED"
  for s in "${PASSED[@]+"${PASSED[@]}"}"; do echo "  passed   $s"; done
  for s in "${SKIPPED[@]+"${SKIPPED[@]}"}"; do echo "  skipped  $s"; done
  for s in "${FAILED[@]+"${FAILED[@]}"}"; do echo "  FAILED   $s"; done
  echo "files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
  local status=0
  if [ "${#FAILED[@]}" -gt 0 ] || [ "$HAVE_GPU" != 1 ]; then status=1; fi
  echo "exit status $status"
  exec 1>&- 2>&-
  wait "$TEE_PID" 2>/dev/null
  exit "$status"
}

echo "genkernels gpu_check: $(date -Is) in $REPO, budget ${BUDGET}s, archs sm_$ARCHS, OUT=$OUT"
step versions 60 versions

HAVE_GPU=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
if [ "$HAVE_GPU" != 1 ]; then
  echo; echo "!!! no GPU: torch.cuda.is_available() is not True; the CUDA steps are skipped"
fi

GPU_BACKENDS=cuda,triton   # the backends the GPU checks call
if [ "$HAVE_GPU" = 1 ] || [ "${GPU_CHECK_BUILD:-}" = always ]; then
  step "build sm_$ARCHS" "${GPU_CHECK_BUILD_LIMIT:-180}" build
  if [ "$STEP_RC" != 0 ]; then
    BUILD_FAILED=${FAILED[-1]:-build sm_$ARCHS: not run}
    [ -z "$STEP_RC" ] && BUILD_FAILED="build sm_$ARCHS: not run (out of time)"
    BUILD_FAILED+="; this tree has no genkernels._C / _C_cuda: backends cuda and cpu untested, the Triton checks ran without them"
    GPU_BACKENDS=triton
    echo; echo "!!! build sm_$ARCHS failed: CUDA-backend checks SKIPPED (calls, compute-sanitizer racecheck/synccheck/initcheck, graph capture and tests on backend cuda); the Triton checks run on genkernels from $REPO"
    SKIPPED+=("CUDA-backend checks (build sm_$ARCHS failed)")
  fi
else
  skip "build sm_$ARCHS" "no GPU (GPU_CHECK_BUILD=always builds anyway)"
fi
export GK_BACKENDS=$GPU_BACKENDS   # bench/gpu_calls.py's backends

step info 60 "$PY" -m genkernels.cli info

step "one call per op" 90 "$PY" "$GPU_CALLS"
stop_without_gpu "one call per op"

# (tests/test_benchmark.py checks CPU benchmark machinery, run by CI; the bench steps below use it on the GPU)
step "gpu tests" 110 "$PY" -m pytest tests -q -m "not slow" --maxfail=20 -rfE -p no:cacheprovider \
  --ignore=tests/test_benchmark.py --junitxml="$OUT/pytest_gpu.xml"
step "compute-sanitizer memcheck" 60 sanitize memcheck
if [ -z "$BUILD_FAILED" ]; then
  for tool in racecheck synccheck initcheck; do   # the CUDA kernels' shared memory, barriers, reads
    step "compute-sanitizer $tool" 40 sanitize "$tool" cuda
  done
fi
step "cuda graph capture" 40 env GK_GRAPH=1 "$PY" "$GPU_CALLS"
# The headline case of every op first (each case compiles its torch.compile impl: seconds each), then as
# many of the SD/StyleGAN shapes in fp16/bf16 as the time left allows (the bench writes its JSON after
# every case, so a cut-short run keeps what it measured); the wheel checks keep their time.
TORCH_WHL=$(second_torch_wheel) || TORCH_WHL=
step "bench cuda (headline cases)" 100 "$PY" -m genkernels.cli bench --device cuda --quick --out bench/results
collect
reserve=50; [ -n "$TORCH_WHL" ] && reserve=115   # the wheel checks' limits, plus margin
full_limit=$(( DEADLINE - $(date +%s) - reserve ))
if [ "$full_limit" -gt 40 ]; then
  step "bench cuda (fp16/bf16 shapes)" "$full_limit" "$PY" -m genkernels.cli bench --device cuda \
    --ops group_norm_silu,attention,ddim_step,vq_nearest,adain --dtypes bfloat16,float16 --out bench/results
  collect
else
  skip "bench cuda (fp16/bf16 shapes)" "not enough time left"
fi
step "wheel next to this torch" 40 wheel_check
if [ -n "$TORCH_WHL" ]; then
  step "wheel next to a second torch ($(basename "$TORCH_WHL"))" 60 wheel_check "$TORCH_WHL"
else
  skip "wheel next to a second torch" "no torch wheel of another version than this machine's on it (offline: \
set GPU_CHECK_TORCH_WHEEL=/path/torch-X.whl, or put one in .whl/ or dist/)"
fi
finish
