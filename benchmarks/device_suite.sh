#!/usr/bin/env bash
# Runs benchmarks/device_suite.py on a GPU machine: installs the CUDA build of JAX if the installed
# one has no GPU backend, then runs the suite under a timeout that leaves time for a second try
# (which reuses the first try's compiled programs through JAX's persistent compilation cache).
#
#   bash benchmarks/device_suite.sh [OUT_DIR]        # OUT_DIR default: $OUT, else .
#
# Environment: JAX_VERSION (default 0.10.2, the version every CPU figure in docs/ was measured
# with; setup.py allows jax>=0.6,<0.11), PIP_ARGS (e.g. "--no-index --find-links /wheels" on a
# machine without network), TRY_TIMEOUT seconds per try (default 420), TOTAL_TIMEOUT (default 840).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-.}}"
PY="${PYTHON:-python3}"
JAX_VERSION="${JAX_VERSION:-0.10.2}"
TRY_TIMEOUT="${TRY_TIMEOUT:-420}"
TOTAL_TIMEOUT="${TOTAL_TIMEOUT:-840}"
START=$(date +%s)
mkdir -p "$OUT_DIR"

has_gpu() { "$PY" -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" 2>/dev/null; }
if ! "$PY" -c "import msma_jax, flax, grain" 2>/dev/null; then
  "$PY" -m pip install -q ${PIP_ARGS:-} -e . || echo "device_suite.sh: pip install -e . failed" >&2
fi
if ! has_gpu; then
  "$PY" -m pip install -q ${PIP_ARGS:-} "jax[cuda12]==${JAX_VERSION}" \
    || echo "device_suite.sh: installing jax[cuda12]==${JAX_VERSION} failed" >&2
fi
has_gpu || echo "device_suite.sh: no GPU backend; the suite runs on $("$PY" -c 'import jax; print(jax.default_backend())' 2>&1)" >&2
"$PY" -c "import jax; print('jax', jax.__version__, jax.devices())"

export JAX_COMPILATION_CACHE_DIR="$OUT_DIR/jax_cache"
rc=1
for try in 1 2; do
  left=$(( TOTAL_TIMEOUT - ($(date +%s) - START) ))
  limit=$(( left < TRY_TIMEOUT ? left : TRY_TIMEOUT ))
  if (( limit < 60 )); then echo "device_suite.sh: ${left}s left, no try $try" >&2; break; fi
  # The suite stops starting rows 60 s before the try's limit, so the table and JSON get written.
  timeout "$limit" "$PY" benchmarks/device_suite.py --budget-s $(( limit - 60 )) \
    --json "$OUT_DIR/device_suite.json" 2>&1 | tee "$OUT_DIR/device_suite_try$try.log"
  rc=${PIPESTATUS[0]}
  (( rc == 0 )) && break
  echo "device_suite.sh: try $try ended with status $rc" >&2
done
exit "$rc"
