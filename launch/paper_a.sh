#!/usr/bin/env bash
# Paper A's results (docs/results.md): the recipe (configs/paper_a.py) and the triplet reading
# (configs/paper_a_triplet.py) for 3 seeds, each ablation (one switch of the triplet reading) for 2, at
# the same step budget, then the tables. Re-run it to continue: a run whose records are archived in
# docs/runs/paper_a/ARM/seedS (or whose workdir holds results.json) is not trained again, so the
# 15-51-minute runs (2-core CPU, the recipe's the shortest, no_pairing's the longest; train_seconds in
# docs/runs/paper_a/*/seed*/results.json) can be spread over several sessions, committing docs/runs after each.
#
#   launch/paper_a.sh                 # everything still missing, recipe first
#   ARMS="recipe sum" launch/paper_a.sh
#   RUNS=/scratch/paper_a ARCHIVE=/tmp/records PYTHON=.venv/bin/python launch/paper_a.sh
set -euo pipefail

cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
runs="${RUNS:-runs/paper_a}"
archive="${ARCHIVE:-docs/runs/paper_a}"
# Every arm, in the tables' row order (bash keeps no order of the overrides' keys below): an arm added
# there goes here too.
all_arms=(recipe triplet sum no_pairing cross siamese shared linear_sts)
read -r -a arms <<< "${ARMS:-${all_arms[*]}}"

# The recipe is configs/paper_a.py as it stands; every other arm is configs/paper_a_triplet.py with one
# switch changed (cross has no cosine STS head: it needs u and v alone).
declare -A overrides=(
  [recipe]=""
  [triplet]=""
  [sum]="--config.optim.gradient_surgery=none --config.optim.surgery_groups=()"
  [no_pairing]="--config.optim.surgery_groups=()"
  [cross]="--config.model.pair_mode=cross --config.tasks.sts.head=linear"
  [siamese]="--config.model.pair_mode=siamese"
  [shared]="--config.model.shared_layers=1"
  [linear_sts]="--config.tasks.sts.head=linear"
)

train_one() {  # ARM SEED: train (or resume) one run, archive its records; the recipe's also predicts test
  local arm=$1 seed=$2 workdir="$runs/$1/seed$2" kept="$archive/$1/seed$2" config=configs/paper_a_triplet.py
  [[ "$arm" == recipe ]] && config=configs/paper_a.py
  [[ -f "$kept/results.json" ]] && return 0
  if [[ ! -f "$workdir/results.json" ]]; then
    mkdir -p "$workdir"
    # shellcheck disable=SC2086  # the overrides are separate words
    "$python" -m jaxmt.train --config="$config" --workdir="$workdir" --config.seed="$seed" \
      ${overrides[$arm]} 2>&1 | tr '\r' '\n' | sed '/^train:/d' > "$workdir.log"
  fi
  "$python" -m jaxmt.summarize --runs="$arm=$workdir" --archive="$archive" > /dev/null
  if [[ "$arm" == recipe ]]; then
    "$python" -m jaxmt.evaluate --workdir="$workdir" --split=test --output_dir="$kept/test_predictions"
  fi
}

for arm in "${arms[@]}"; do
  [[ -v "overrides[$arm]" ]] || { echo "launch/paper_a.sh: unknown arm $arm" >&2; exit 2; }
  seeds=(0 1)
  [[ "$arm" == recipe || "$arm" == triplet ]] && seeds=(0 1 2)
  for seed in "${seeds[@]}"; do
    train_one "$arm" "$seed"
  done
done

# The tables of docs/results.md: last evaluation and best checkpoint, every archived arm (not only those
# trained by this call) against the triplet reading, which the ablations change one switch of.
done_arms=()
for arm in "${all_arms[@]}"; do
  compgen -G "$archive/$arm/seed*/results.json" > /dev/null && done_arms+=("--runs=$arm=$archive/$arm/seed*")
done
baseline=()
[[ -f "$archive/triplet/seed0/results.json" ]] && baseline=(--baseline=triplet)
for key in dev best_dev; do
  "$python" -m jaxmt.summarize "${done_arms[@]}" "${baseline[@]}" --key="$key" --metrics=sst,para,sts,mean \
    --out="$archive/table_$key.md"
done
