#!/usr/bin/env bash
# Sets up a fresh machine for genkernels: a virtual environment in .venv with torch and the tools,
# then builds the native modules in place (CPU always; CUDA too when nvcc is found).
#   GENKERNELS_TORCH   torch requirement to install when torch is missing (default torch==2.13.0)
#   GENKERNELS_CUDA    1/0 to force the CUDA module on/off (default: on when nvcc is found)
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
python -m pip install -q --upgrade pip

if ! python -c "import torch" 2>/dev/null; then
  python -m pip install -q "${GENKERNELS_TORCH:-torch==2.13.0}"
fi
python -m pip install -q -r requirements-dev.txt
# Build in place against the tools just installed (no isolation: reuses build/ between runs).
python -m pip install -q --no-build-isolation --no-deps -e .
python -c "import genkernels, genkernels._native as n; print('genkernels', genkernels.__version__, '| _C:', n.load('_C') is not None, '| _C_cuda:', n.load('_C_cuda') is not None or n.load_error('_C_cuda'))"
