#!/usr/bin/env bash
# Checks the project's dependency rules: the data-preparation tools never link TensorFlow or MPI,
# and only the model/checkpoint/eval modules name `tensorflow`.
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0
for pkg in build-records make-synthetic dawnrun-records dawnrun-data dawnrun-schedule; do
  if cargo tree -q -e normal -p "$pkg" | grep -Eq '^.*\b(tensorflow|mpi) v'; then
    echo "layering: $pkg depends on tensorflow or mpi" >&2; fail=1
  fi
done
if grep -rn --include='*.rs' 'tensorflow::' src/train src/bin 2>/dev/null; then
  echo "layering: tensorflow:: named outside model/, checkpoint/, eval/" >&2; fail=1
fi
if grep -rn --include='*.rs' '\bmpi::' src crates/data crates/schedule tools 2>/dev/null; then
  echo "layering: mpi:: named outside crates/dist" >&2; fail=1
fi
exit $fail
