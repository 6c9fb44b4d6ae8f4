#!/usr/bin/env bash
# `make demo`: the main job on the embedded default dataset, end to end:
#   generate the synthetic ImageNet-shaped set -> build records for both sizes ->
#   mpirun -np 2 trainer schedules/demo.yaml -> mpirun -np 2 eval-sweep -> report.
# The dataset and records are kept between runs (build-records resumes); the training run is new.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bin="$root/target/release"
data="$root/runs/demo-data"
run="$root/runs/demo"
np=${NP:-2}
mpirun=(mpirun -np "$np" --oversubscribe --bind-to none)

step() { printf '\n== %s\n' "$*" >&2; }
t0=$(date +%s)

step "1/5 synthetic ImageNet-shaped dataset -> $data/images"
if [ ! -e "$data/images/.complete" ]; then
  rm -rf "$data/images"
  "$bin/make-synthetic" --out "$data/images"
  touch "$data/images/.complete"
else
  echo "already there" >&2
fi

for size in 160 320; do
  step "2/5 build-records $size -> $data/records/$size"
  "$bin/build-records" --input "$data/images/$size" --output "$data/records/$size" \
    --train-shards 8 --validation-shards 2
done

step "3/5 ${mpirun[*]} trainer schedules/demo.yaml"
rm -rf "$run"
"${mpirun[@]}" "$bin/trainer" schedules/demo.yaml --run-dir "$run"

step "4/5 ${mpirun[*]} eval-sweep $run"
"${mpirun[@]}" "$bin/eval-sweep" "$run"

step "5/5 report"
cat >&2 <<MSG
demo finished in $(( $(date +%s) - t0 )) s
  DAWNBench table : $run/eval.tsv   (and eval.jsonl)
  plot            : $run/eval.png
  training log    : $run/metrics.jsonl
  TensorBoard     : tensorboard --logdir $run   (e.g. from .deps/venv)
  checkpoints     : $run/checkpoints/
MSG
