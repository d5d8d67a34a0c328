#!/usr/bin/env bash
# AddressSanitizer + UBSan run: builds genkernels._C and _C_cuemu with GENKERNELS_SANITIZE=address,undefined
# (setup.py: only the instruction set this machine runs, plus base; written to build/sanitize-<tag>/, never
# over the normal modules), then runs under them the fuzz suite (hypothesis profile "ci"), the
# native-boundary tests, the thread tests and conv_rows' tests (every tail of its blocking). Needs the
# normal build (scripts/setup.sh) first.
#   GENKERNELS_SANITIZE   sanitizers (default address,undefined)
# Extra arguments go to pytest (e.g. -k attention).
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export GENKERNELS_SANITIZE=${GENKERNELS_SANITIZE:-address,undefined}
isa=$(python -c "import genkernels._C as c; print(c.isa)")
[ "$isa" = base ] || isa="$isa;base"
GENKERNELS_ISAS="$isa" GENKERNELS_CUDA=0 python setup.py -q build_ext --inplace
tag=$(python -c "import sys, sysconfig; print(sysconfig.get_config_var('SOABI') or 'py%d%d' % sys.version_info[:2])")
overlay=build/sanitize-$tag

# The package as it is, with the sanitized modules in place of the normal ones.
for entry in genkernels/*; do
  case "$(basename "$entry")" in
    _C*.so|__pycache__) ;;
    *) ln -sfn "$PWD/$entry" "$overlay/genkernels/" ;;
  esac
done

# libasan must come first in the process (python itself is not instrumented), libstdc++ right after it
# (else ASan's __cxa_throw interceptor finds no real one when torch throws); the UBSan runtime comes
# with the modules. PYTHONSAFEPATH: neither pytest nor the tests' subprocesses put the checkout's
# genkernels/ ahead of the overlay.
export LD_PRELOAD="$(${CXX:-c++} -print-file-name=libasan.so) $(${CXX:-c++} -print-file-name=libstdc++.so)"
export ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export PYTHONPATH="$PWD/$overlay" PYTHONSAFEPATH=1 GENKERNELS_FUZZ=ci
python - <<EOF
import importlib
for name in ("_C", "_C_cuemu"):
    try:
        m = importlib.import_module("genkernels." + name)
    except ImportError as e:  # _C_cuemu is only built where the CUDA headers are
        assert name != "_C", e
        print("not built:", name)
        continue
    assert "$overlay" in m.__file__, m.__file__
    print("sanitized:", m.__file__)
EOF

# Canary: a kernel told (past the native checks) that the codebook has one row more than its buffer
# holds must be stopped by AddressSanitizer; otherwise the run below proves nothing.
canary=$(python - 2>&1 <<'EOF' || true
import torch
from genkernels import _native
z, e = torch.randn(5, 4), torch.randn(7, 4)
idx, dist = torch.empty(5, dtype=torch.int64), torch.empty(5)
ptrs = [t.data_ptr() for t in (z, e, idx, dist)]
sizes = [80, 8 * 16, 40, 20]  # e claims 8 rows of 16 bytes
_native.load("_C").vq_nearest(0, ptrs, sizes, [5, 8, 4, 0], [1e-12], 1)
print("canary: not caught")
EOF
)
if ! grep -q "AddressSanitizer: heap-buffer-overflow" <<<"$canary"; then
  echo "$canary" | tail -20
  echo "sanitize.sh: the seeded out-of-bounds read was not reported: the sanitizer is not active" >&2
  exit 1
fi
echo "canary: $(grep -m1 "ERROR: AddressSanitizer" <<<"$canary")"

# --capture=sys: a sanitizer report (written to fd 2 as the process aborts) reaches the log
python -m pytest tests/test_fuzz.py tests/test_bad_inputs.py tests/test_threads.py tests/test_conv_rows.py -q -p no:cacheprovider \
  --capture=sys "$@"
