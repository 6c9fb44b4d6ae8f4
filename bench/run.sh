#!/usr/bin/env bash
# `make bench`: every side-by-side comparison of dawnrun against Python TensorFlow, one table.
# QUICK=1 for a smoke run (one repetition, short windows, no larger data set, np 2 only).
# Extra arguments go to bench/harness.py (e.g. --only records,pipeline --work /tmp/keep).
# Output: the table on stdout, bench/results/latest.{md,json}, raw samples and a log beside them.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${DAWNRUN_PYTHON:-$ROOT/.deps/venv/bin/python}"
if [[ ! -x "$PY" ]]; then
    echo "error: $PY not found: run \`make setup\` first" >&2
    exit 2
fi
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
# The trainer turns on TensorFlow's oneDNN CPU kernels (TF 2.13 does so itself only on newer
# CPUs); the Python sides get the same kernels, so the step rows compare like with like.
export TF_ENABLE_ONEDNN_OPTS="${TF_ENABLE_ONEDNN_OPTS:-1}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
args=()
if [[ "${QUICK:-0}" != 0 ]]; then
    args+=(--quick)
fi
exec "$PY" "$ROOT/bench/harness.py" --root "$ROOT" "${args[@]}" "$@"
