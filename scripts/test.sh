#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the test suite. Extra arguments go to pytest.
#   GENKERNELS_TEST_PROCS  pytest processes run side by side, each on every n-th test (default: the
#                          number of cores, at most 2; 1 runs one plain pytest)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
cores=$(nproc)
procs=${GENKERNELS_TEST_PROCS:-$(( cores < 2 ? cores : 2 ))}
if [ "$procs" -le 1 ]; then
  exec python -m pytest tests -q -p no:cacheprovider "$@"
fi
# One shard per process, its output prefixed with [k]; each gets its share of the cores' threads.
threads=$(( cores / procs > 0 ? cores / procs : 1 ))
pids=()
for ((k = 0; k < procs; k++)); do
  ( set -o pipefail
    GENKERNELS_TEST_SHARD="$k/$procs" OMP_NUM_THREADS=${OMP_NUM_THREADS:-$threads} \
      python -m pytest tests -q -p no:cacheprovider "$@" 2>&1 | sed -u "s/^/[$k] /" ) &
  pids+=($!)
done
rc=0
for pid in "${pids[@]}"; do
  wait "$pid" || rc=$?
done
echo "test.sh: $procs pytest processes, exit status $rc"
exit $rc
