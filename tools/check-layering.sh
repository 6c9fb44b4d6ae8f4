#!/usr/bin/env bash
# The dependency rules of docs/ARCHITECTURE.md: the data-preparation tools never link TensorFlow
# or MPI (checked on the resolved dependency tree), and every import follows the flow
# (tools/check-layering.py: crate order, module order in src/, no circles, who names what).
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0
for pkg in build-records make-synthetic dawnrun-records dawnrun-data dawnrun-schedule; do
  if cargo tree -q -e normal -p "$pkg" | grep -Eq '^.*\b(tensorflow|mpi) v'; then
    echo "layering: $pkg depends on tensorflow or mpi" >&2; fail=1
  fi
done
python3 tools/check-layering.py || fail=1
exit $fail
