#!/usr/bin/env bash
# The one prepared script for a lent GPU (H100/H200, 16 cores, no network). In this order (issue 16):
#   versions, build for sm_90, `genkernels info` (driver, runtime, device), one call per op on each GPU
#   backend, the wheel (built from this run's build) installed next to this machine's torch, the GPU
#   tests, compute-sanitizer memcheck / racecheck / synccheck / initcheck on a small case of every CUDA
#   kernel, a CUDA-graph capture of every op, the benchmarks, and the wheel next to a second torch
#   version (a torch wheel already on the machine; without one the script says so and skips that step).
# Runs from anywhere; works in the repository root.
#
#   OUT=/some/dir bash bench/gpu_check.sh
#
# Time: the whole script stops before GPU_CHECK_BUDGET seconds (default 300), so that two runs, each
# with a machine start (1-2 min), fit a 15-minute device lease: 2 x (120 + 300 + 15) s = 14.5 min at
# most. Run it with the device tool's timeout_s >= 330 (a step may overrun its limit by the 15 s that
# `timeout` waits before a KILL); a rerun on a fresh machine can take only what the first run did not
# pass (GPU_CHECK_ONLY). Each step has its own limit, clamped to the time left; a step that finds under
# 15 s left is skipped (out of time), so the budget cuts the list from its end. Limits in seconds:
#   versions 60, build 150, info 60, one call per op 60, wheel build 60, wheel next to this torch 45,
#   gpu tests 90, compute-sanitizer memcheck 45, racecheck / synccheck / initcheck 30 each, cuda graph
#   capture 30, bench headline cases 60, bench fp16/bf16 shapes (what is left), wheel next to a second
#   torch 60: 810 s of limits for the 300 s budget (most steps end far below their limit: versions and
#   info take seconds). The build on 16 cores is bound by its longest object (csrc/cuda/attention.cu,
#   ~41 s of CPU on the 2-core machine) and CMake's configure, not by its total (bench/README.md).
# A failing step is reported and later steps still run. Without a GPU (a dry run, GPU_CHECK_BUILD=always:
# run it in a clone, as the build replaces the tree's native modules) the GPU steps are skipped one by
# one, saying so, and the rest run: versions, build, info, and the wheel built, installed and imported
# (its `genkernels info`, no calls).
# genkernels is always this tree's (cwd and PYTHONPATH; genkernels._native loads native modules only from
# the package's own directory). The build first removes the tree's _C and _C_cuda, so that a failed (or
# timed-out) build leaves none: then `info` shows them not loaded, the CUDA-backend checks are skipped
# (one line says so), the Triton checks still run, and the summary starts with the failed build.
# Exit status: 0 every step run passed on a GPU, 1 a step failed, 2 none failed but there was no GPU
# (a dry run: nothing was checked on a GPU).
#
# Environment: PYTHON (default: the first of python, python3 that imports torch), GPU_CHECK_BUDGET
# (seconds), GPU_CHECK_BUILD=always (build even without a GPU: compile check), GPU_CHECK_BUILD_LIMIT
# (seconds for the build step, default 150; a dry run on 2 loaded cores needs ~1500, and a budget to
# match), GPU_CHECK_LIMIT_SCALE (an integer every step's limit is multiplied by, default 1: a dry run
# on 2 loaded cores, where importing torch alone can take 20 s, needs ~4), GPU_CHECK_ARCHS (default 90), GPU_CHECK_ONLY (a comma list of shell patterns of step names,
# e.g. 'compute-sanitizer*,cuda graph*': only those steps run, besides versions, build and info),
# GPU_CHECK_WHEEL (a genkernels wheel to check instead of one built from this run's build; it must match
# this machine's Python: one made on the CPU machine, Python 3.11, does not install on the lent
# machine's 3.12), GPU_CHECK_TORCH_WHEEL (the second torch; default: a torch-*.whl in .whl/ or dist/ of
# another version).
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
BUDGET=${GPU_CHECK_BUDGET:-300}
DEADLINE=$((START + BUDGET))
ARCHS=${GPU_CHECK_ARCHS:-90}
PASSED=() FAILED=() SKIPPED=()
STEP_RC=        # the exit status of the last step run ("" when it was skipped)
BUILD_FAILED=   # the build step's failure, for the summary
BUILT=          # 1 once the build step has passed

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
  if ! wanted "$name"; then skip "$name" "not in GPU_CHECK_ONLY"; return 0; fi
  limit=$((limit * ${GPU_CHECK_LIMIT_SCALE:-1}))
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

# gpu_step: a step that needs a GPU; without one (a dry run) it is skipped, saying so.
gpu_step() {
  if [ "$HAVE_GPU" = 1 ]; then step "$@"; else skip "$1" "no GPU"; fi
}

# wanted NAME: does GPU_CHECK_ONLY (comma list of shell patterns) select step NAME? versions, the build
# and info always run (a fresh machine needs the build; the log needs the versions).
wanted() {
  [ -z "${GPU_CHECK_ONLY:-}" ] && return 0
  case "$1" in versions|build*|info) return 0 ;; esac
  local pat pats
  IFS=, read -ra pats <<< "$GPU_CHECK_ONLY"
  for pat in "${pats[@]}"; do
    # shellcheck disable=SC2053  # a pattern on purpose
    [[ $1 == $pat ]] && return 0
  done
  return 1
}

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

# The genkernels wheel: GPU_CHECK_WHEEL, else the one built from this run's CMake build (`pip wheel`
# without isolation, no network: the build step's objects and modules, packaged). A wheel is tied to
# its CPython version (pybind11 modules).
export WHEEL_DIR=$REPO/build/gpu-check-wheel
wheel_file() {
  if [ -n "${GPU_CHECK_WHEEL:-}" ]; then echo "$GPU_CHECK_WHEEL"; return 0; fi
  ls "$WHEEL_DIR"/genkernels-*.whl 2>/dev/null | head -1
}

wheel_build() {
  rm -rf "$WHEEL_DIR" "$REPO"/build/bdist.*   # a killed bdist leaves its dist-info behind (tests/test_wheel.py)
  GENKERNELS_CUDA=1 GENKERNELS_CUDA_EMU=0 GENKERNELS_CUDA_ARCHS="$ARCHS" GENKERNELS_JOBS="$(cores)" \
    GENKERNELS_BUILD_DIR="$REPO/build/gpu-check-sm$ARCHS" \
    "$PY" -m pip wheel --no-deps --no-build-isolation --no-index -q -w "$WHEEL_DIR" "$REPO" || return 1
  ls -l "$WHEEL_DIR"
}

# The wheel installed into a throwaway directory (pip --target: no venv to create, pip's own install
# into one took 65 s under load) in front of this machine's site-packages, so next to its torch (or,
# given a torch wheel, that torch installed beside it, in front of the machine's), imported from outside
# the repository: its native modules must be the wheel's; with a GPU, one call per op.
wheel_check() {
  local torch_whl=${1:-} whl site
  whl=$(wheel_file)
  if [ -z "$whl" ] || [ ! -f "$whl" ]; then echo "no wheel (GPU_CHECK_WHEEL, or the wheel build's in $WHEEL_DIR)"; return 1; fi
  site=$(mktemp -d /tmp/gk_wheel_XXXX)
  "$PY" -m pip install -q --no-deps --no-index --no-compile --target "$site" "$whl" ${torch_whl:+"$torch_whl"} || return 1
  (cd "$site" && export PYTHONPATH="$site" && SITE="$site" "$PY" -c "import importlib, os, genkernels, torch
print('wheel', os.path.basename('$whl'), 'genkernels from', genkernels.__file__, 'torch', torch.__version__, 'from', torch.__file__)
pkg = os.path.dirname(genkernels.__file__)
assert pkg == os.path.join(os.environ['SITE'], 'genkernels'), f'genkernels from {pkg}, not the wheel'
for name in ('_C', '_C_cuda'):
    mod = importlib.import_module('genkernels.' + name)
    print(name, mod.__file__)
    assert os.path.dirname(mod.__file__) == pkg, f'{name} from {mod.__file__}, not the wheel'
" && "$PY" -m genkernels.cli info && { [ "$HAVE_GPU" != 1 ] || "$PY" "$GPU_CALLS"; })
  local rc=$?
  rm -rf "$site"
  return $rc
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

finish() {
  echo
  echo "=== summary ($(( $(date +%s) - START ))s of ${BUDGET}s)"
  [ -n "$BUILD_FAILED" ] && echo "  BUILD FAILED: $BUILD_FAILED"
  [ "$HAVE_GPU" != 1 ] && echo "  NO GPU: a dry run; nothing was run on a GPU (the GPU steps are listed as skipped)"
  for s in "${PASSED[@]+"${PASSED[@]}"}"; do echo "  passed   $s"; done
  for s in "${SKIPPED[@]+"${SKIPPED[@]}"}"; do echo "  skipped  $s"; done
  for s in "${FAILED[@]+"${FAILED[@]}"}"; do echo "  FAILED   $s"; done
  echo "files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
  local status=0
  if [ "${#FAILED[@]}" -gt 0 ]; then status=1; elif [ "$HAVE_GPU" != 1 ]; then status=2; fi
  echo "exit status $status"
  exec 1>&- 2>&-
  wait "$TEE_PID" 2>/dev/null
  exit "$status"
}

echo "genkernels gpu_check: $(date -Is) in $REPO, budget ${BUDGET}s, archs sm_$ARCHS, OUT=$OUT"
step versions 60 versions

HAVE_GPU=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
export HAVE_GPU   # (the steps that are functions run in a child bash)
if [ "$HAVE_GPU" != 1 ]; then
  echo; echo "!!! no GPU: torch.cuda.is_available() is not True; the GPU steps are skipped"
fi

GPU_BACKENDS=cuda,triton   # the backends the GPU checks call
if [ "$HAVE_GPU" = 1 ] || [ "${GPU_CHECK_BUILD:-}" = always ]; then
  step "build sm_$ARCHS" "${GPU_CHECK_BUILD_LIMIT:-150}" build
  if [ "$STEP_RC" = 0 ]; then
    BUILT=1
  else
    BUILD_FAILED=${FAILED[-1]:-build sm_$ARCHS: not run}
    [ -z "$STEP_RC" ] && BUILD_FAILED="build sm_$ARCHS: not run (out of time)"
    BUILD_FAILED+="; this tree has no genkernels._C / _C_cuda: backends cuda and cpu untested, the Triton checks ran without them"
    GPU_BACKENDS=triton
    echo; echo "!!! build sm_$ARCHS failed: CUDA-backend checks SKIPPED (calls, compute-sanitizer racecheck/synccheck/initcheck, graph capture and tests on backend cuda; the wheel); the Triton checks run on genkernels from $REPO"
    SKIPPED+=("CUDA-backend checks (build sm_$ARCHS failed)")
  fi
else
  skip "build sm_$ARCHS" "no GPU (GPU_CHECK_BUILD=always builds anyway)"
fi
export GK_BACKENDS=$GPU_BACKENDS   # bench/gpu_calls.py's backends

step info 60 "$PY" -m genkernels.cli info

gpu_step "one call per op" 60 "$PY" "$GPU_CALLS"
# The wheel early: it is cheap once the build is there (a relink), and the budget cuts the list's end.
rm -rf "$WHEEL_DIR"   # no earlier run's wheel passes for this one's
if [ -n "$BUILD_FAILED" ]; then
  skip "wheel" "build sm_$ARCHS failed"
elif [ -z "${GPU_CHECK_WHEEL:-}" ] && [ "$BUILT" != 1 ]; then
  skip "wheel" "no build to make it from (GPU_CHECK_BUILD=always) and no GPU_CHECK_WHEEL"
else
  [ -z "${GPU_CHECK_WHEEL:-}" ] && step "wheel build" 60 wheel_build
  step "wheel next to this torch" 45 wheel_check
fi
# The files whose tests take CUDA tensors when there is a GPU (DEVICE, "cuda" backends), on
# pytest-xdist's workers where it is installed (one GPU is plenty for them).
GPU_TESTS=(tests/test_adain.py tests/test_attention.py tests/test_attention_tf32x3.py tests/test_cuda_group_norm.py
  tests/test_ddim_step.py tests/test_fuzz.py tests/test_group_norm_silu.py tests/test_native_load.py
  tests/test_nonfinite.py tests/test_norm_outliers.py tests/test_op_calls.py tests/test_triton_compile.py
  tests/test_vq_nearest.py)
XDIST=(); "$PY" -c "import xdist" 2>/dev/null && XDIST=(-n 8)
gpu_step "gpu tests" 90 "$PY" -m pytest "${GPU_TESTS[@]}" "${XDIST[@]}" -q -m "not slow" --maxfail=20 -rfE \
  -p no:cacheprovider --junitxml="$OUT/pytest_gpu.xml"
gpu_step "compute-sanitizer memcheck" 45 sanitize memcheck
for tool in racecheck synccheck initcheck; do   # the CUDA kernels' shared memory, barriers, reads
  if [ -n "$BUILD_FAILED" ]; then break; fi
  gpu_step "compute-sanitizer $tool" 30 sanitize "$tool" cuda
done
gpu_step "cuda graph capture" 30 env GK_GRAPH=1 "$PY" "$GPU_CALLS"
# The headline case of every op first (each case compiles its torch.compile impl: seconds each), then as
# many of the SD/StyleGAN shapes in fp16/bf16 as the time left allows (the bench writes its JSON after
# every case, so a cut-short run keeps what it measured); the second-torch wheel check keeps its time.
TORCH_WHL=$(second_torch_wheel) || TORCH_WHL=
gpu_step "bench cuda (headline cases)" 60 "$PY" -m genkernels.cli bench --device cuda --quick --out bench/results
collect
reserve=5; [ -n "$TORCH_WHL" ] && [ -z "$BUILD_FAILED" ] && reserve=65   # its limit, plus margin
full_limit=$(( DEADLINE - $(date +%s) - reserve ))
if [ "$HAVE_GPU" = 1 ] && [ "$full_limit" -lt 40 ]; then
  skip "bench cuda (fp16/bf16 shapes)" "not enough time left"
else
  gpu_step "bench cuda (fp16/bf16 shapes)" "$full_limit" "$PY" -m genkernels.cli bench --device cuda \
    --ops group_norm_silu,attention,ddim_step,vq_nearest,adain --dtypes bfloat16,float16 --out bench/results
  collect
fi
if [ -n "$BUILD_FAILED" ]; then
  :
elif [ -n "$TORCH_WHL" ]; then
  step "wheel next to a second torch ($(basename "$TORCH_WHL"))" 60 wheel_check "$TORCH_WHL"
else
  skip "wheel next to a second torch" "no torch wheel of another version than this machine's here (set \
GPU_CHECK_TORCH_WHEEL=/path/torch-X.whl, or put one in .whl/ or dist/; the lent GPU machine is offline and \
the device tool carries at most 64 MiB, less than a torch wheel)"
fi
finish
