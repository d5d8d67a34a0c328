#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the main job: the benchmark table for this machine's device
# (eager vs torch.compile vs every genkernels backend), written to bench/out/ as JSON and PNG.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
genkernels info
genkernels bench "$@"
