#!/usr/bin/env bash
# Paper B (issue 17), one resumable pipeline: continued pre-training of all-MiniLM-L6-v2, then downstream
# evaluation of three encoders, then the tables.
#
#   launch/paper_b.sh                     # everything still missing, in this order:
#     1. pretrain   baseline (configs/pretrain_minilm.py) and hierarchical (configs/pretrain_minilm_hierarchical.py)
#                   on wikitext2-test.txt; each leaves its encoder in $RUNS/pretrain/NAME/hf_model
#     2. probe      jaxmt.probe of minilm, baseline and hierarchical on wikitext2-valid.txt (unseen), per PROBE_SEED
#     3. qa, sick   for each encoder (baseline, hierarchical, minilm) and SEED: SQuAD (configs/paper_b_squad.py:
#                   train on part1, score part2) and SICK entailment (configs/paper_b_sick.py)
#     4. summary    jaxmt.summarize tables (mean ± std over seeds, arms = encoders; probing: over probe seeds)
#                   into $ARCHIVE/*.md
#
# Variables (environment):
#   RUNS=runs/paper_b           workdirs (checkpoints, exported encoders, logs in $RUNS/logs); gitignored
#   ARCHIVE=docs/runs/paper_b   each finished run's small records (results.json, config.json, metrics.jsonl;
#                               the probe's results.*) are copied here at once, the layout of
#                               `jaxmt.summarize --archive`: ARCHIVE/qa/ENCODER/seedN, ARCHIVE/sick/..., ...
#                               plus timings.tsv (wall seconds of every stage). Commit it: it is what survives.
#   DATA=../shared/data         the shared data folder (corpus/, squad/, sick/)
#   STAGES="pretrain probe qa sick summary"   the stages to run (a subset; 'downstream' = qa sick)
#   ENCODERS="baseline hierarchical minilm"   the encoders whose qa and sick runs are made
#   SEEDS="0 1 2"  PROBE_SEEDS="0 1 2"        fine-tuning seeds; probing-task seeds
#   PYTHON=python3              the interpreter with jaxmt installed
#   KEEP_CHECKPOINTS=0          1: keep each finished run's Orbax checkpoints (otherwise deleted once its
#                               results.json exists: only resumption needs them, and ~0.25 GB each)
#   DRY_RUN=0                   1: print what would run, run nothing
#
# Resuming: a stage is skipped when its results.json exists in $RUNS (this session) or in $ARCHIVE (an earlier
# session, committed). A killed stage resumes from its last checkpoint in $RUNS when that still exists, else
# starts again. So after a kill, run the same command again.
#
# Sizing (2-core CPU, idle; measured, $ARCHIVE/timings.tsv): pre-training 16 + 15.5 minutes, probing 1.3 minutes
# a probe seed, each SQuAD run 7.7 and each SICK run 2.75 minutes: ~33 + ~4 + 9 x 10.5 = ~2 h 20 min in all,
# more than one 3-hour session holds next to setting up, testing and committing.
#
# Splitting over sessions. runs/ (with the exported encoders) is lost between sessions; $ARCHIVE is kept when
# committed. The continued encoders' qa, sick and probe runs therefore have to finish in the session that
# pre-trained them, or that encoder is pre-trained again; minilm's need no pre-training. Hence the order above:
#   session 1:  timeout 150m launch/paper_b.sh; git add docs/runs/paper_b; git commit
#               -> both pre-trainings (~33 min), probing (~4 min), then baseline's and hierarchical's qa + sick
#                  (~32 min an encoder) until the timeout (timeout's SIGTERM makes the run in flight save a
#                  checkpoint and stop; that run starts again next session).
#   session 2:  launch/paper_b.sh; git add docs/runs/paper_b; git commit
#               -> skips everything archived, pre-trains again only an encoder with runs still to make
#                  (deterministic: the same config, seed and machine give the same encoder), runs what is
#                  left (minilm's, <= ~32 min) and writes the tables.
# What is re-run: a stage cut off by a session's end restarts from scratch in the next one (its checkpoint was
# in runs/). If session 1 ends before an encoder's qa/sick runs or the probes are all archived, session 2
# pre-trains that encoder again (same config and seed, so the same encoder is expected; the archived
# pre-training record is overwritten, and `git diff $ARCHIVE/pretrain` shows whether it reproduced).
# The same split by hand: session 1 `ENCODERS="baseline hierarchical" STAGES="pretrain probe downstream"`,
# session 2 `ENCODERS=minilm STAGES="downstream summary"`.
set -euo pipefail

cd "$(dirname "$0")/.."
RUNS="${RUNS:-runs/paper_b}"
ARCHIVE="${ARCHIVE:-docs/runs/paper_b}"
DATA="${DATA:-../shared/data}"
STAGES=" ${STAGES:-pretrain probe qa sick summary} "
ENCODERS="${ENCODERS:-baseline hierarchical minilm}"
SEEDS="${SEEDS:-0 1 2}"
PROBE_SEEDS="${PROBE_SEEDS:-0 1 2}"
PYTHON="${PYTHON:-python3}"
KEEP_CHECKPOINTS="${KEEP_CHECKPOINTS:-0}"
DRY_RUN="${DRY_RUN:-0}"

STAGES="${STAGES//,/ }"
STAGES="${STAGES// downstream / qa sick }"
ENCODERS="${ENCODERS//,/ }"
ALL_ENCODERS=(minilm baseline hierarchical)  # the probed models and the tables' arms, whatever ENCODERS runs now
CONTINUED=(baseline hierarchical)            # the encoders pre-trained here
declare -A PRETRAIN_CONFIG=([baseline]=configs/pretrain_minilm.py
                            [hierarchical]=configs/pretrain_minilm_hierarchical.py)

die() { echo "launch/paper_b.sh: $*" >&2; exit 2; }
for stage in $STAGES; do
  [[ " pretrain probe qa sick summary " == *" $stage "* ]] ||
    die "unknown stage '$stage' in STAGES (pretrain probe qa sick summary downstream)"
done
for encoder in $ENCODERS; do
  [[ " ${ALL_ENCODERS[*]} " == *" $encoder "* ]] || die "unknown encoder '$encoder' in ENCODERS (${ALL_ENCODERS[*]})"
done
for seed in $SEEDS $PROBE_SEEDS; do
  [[ "$seed" =~ ^[0-9]+$ ]] || die "seeds must be non-negative integers, got '$seed'"
done
[[ "$DRY_RUN" == 1 || -d "$DATA/corpus" ]] || die "DATA=$DATA has no corpus/ (set DATA to the shared data folder)"

wants() { [[ "$STAGES" == *" $1 "* ]]; }
# A run (a path under $RUNS and $ARCHIVE, e.g. qa/minilm/seed0) is done when either holds its results.json.
done_run() { [[ -f "$RUNS/$1/results.json" || -f "$ARCHIVE/$1/results.json" ]]; }
encoder_path() {  # the model.name / --models path of an encoder
  if [[ "$1" == minilm ]]; then echo minilm; else echo "$RUNS/pretrain/$1/hf_model"; fi
}

# `archive RUN "RECORDS"`: copies a finished run's small records from $RUNS to $ARCHIVE (as
# jaxmt.summarize --archive does) and frees its checkpoints.
archive() {
  local run="$1" record names
  read -ra names <<<"$2"
  [[ "$DRY_RUN" == 1 ]] && return 0
  mkdir -p "$ARCHIVE/$run"
  for record in "${names[@]}"; do
    if [[ -f "$RUNS/$run/$record" ]]; then cp "$RUNS/$run/$record" "$ARCHIVE/$run/$record"; fi
  done
  if [[ "$KEEP_CHECKPOINTS" != 1 ]]; then rm -rf "$RUNS/$run/checkpoints" "$RUNS/$run/best"; fi
}

# Runs one stage: `stage RUN RECORDS -- COMMAND...`, its log in $RUNS/logs/; skipped when RUN is done
# (`ONLY_HERE=1 stage ...`: done in $RUNS, whatever $ARCHIVE holds).
stage() {
  local run="$1" records="$2"; shift 3
  if [[ -f "$RUNS/$run/results.json" ]] || { [[ "${ONLY_HERE:-0}" != 1 ]] && done_run "$run"; }; then
    if [[ -f "$RUNS/$run/results.json" ]]; then archive "$run" "$records"; fi
    echo "[paper_b] skip   $run (results.json present)"
    return 0
  fi
  if [[ "$DRY_RUN" == 1 ]]; then
    echo "[paper_b] run    $run: $(printf '%q ' "$@")"
    return 0
  fi
  local log="$RUNS/logs/${run//\//_}.log" start=$SECONDS load
  load="$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo '?')"
  mkdir -p "$RUNS/logs"
  echo "[paper_b] run    $run (log $log; load average at start $load)"
  if ! "$@" >"$log" 2>&1; then
    tail -n 25 "$log" >&2
    die "$run failed (exit status above; log $log)"
  fi
  archive "$run" "$records"
  mkdir -p "$ARCHIVE"
  [[ -f "$ARCHIVE/timings.tsv" ]] || printf 'run\tseconds\tload_at_start\tfinished_utc\n' >"$ARCHIVE/timings.tsv"
  printf '%s\t%d\t%s\t%s\n' "$run" $((SECONDS - start)) "$load" "$(date -u +%FT%TZ)" >>"$ARCHIVE/timings.tsv"
  echo "[paper_b] done   $run in $((SECONDS - start)) s"
}

TRAIN_RECORDS="results.json config.json metrics.jsonl"
PROBE_RECORDS="results.json results.md results.csv"

# Whether an encoder's pre-training is still needed: some probe, qa or sick run that reads it is not done.
needs_encoder() {
  local encoder="$1" seed task
  for seed in $PROBE_SEEDS; do done_run "probe/seed$seed" || return 0; done
  for seed in $SEEDS; do
    for task in qa sick; do done_run "$task/$encoder/seed$seed" || return 0; done
  done
  return 1
}

# 1. Continued pre-training of MiniLM, baseline and hierarchical: equal steps, batch, LR, data and seed.
if wants pretrain; then
  for encoder in "${CONTINUED[@]}"; do
    run="pretrain/$encoder"
    if [[ ! -f "$RUNS/$run/results.json" || ! -d "$RUNS/$run/hf_model" ]] && ! needs_encoder "$encoder"; then
      echo "[paper_b] skip   $run (every probe, qa and sick run that reads it is archived)"
      continue
    fi
    if [[ -f "$ARCHIVE/$run/results.json" && ! -f "$RUNS/$run/results.json" ]]; then
      echo "[paper_b] note   $run is archived, but its encoder went with an earlier session's runs/: pre-training again"
    fi
    ONLY_HERE=1 stage "$run" "$TRAIN_RECORDS" -- "$PYTHON" -m jaxmt.pretrain --config="${PRETRAIN_CONFIG[$encoder]}" \
      --workdir="$RUNS/$run" --config.data.files="('$DATA/corpus/wikitext2-test.txt',)"
  done
fi

# An encoder still to be read must have been pre-trained in this session (its hf_model is in $RUNS).
check_encoder() {
  local encoder="$1" path
  path="$(encoder_path "$encoder")"
  [[ "$encoder" == minilm || "$DRY_RUN" == 1 || -f "$path/config.json" ]] ||
    die "the $encoder encoder ($path) is missing: run the pretrain stage in this session (runs/ does not survive)"
}

# 2. Probing every layer of the three encoders on the unseen WikiText-2 valid file, one run per task seed.
if wants probe; then
  models=""
  for encoder in "${ALL_ENCODERS[@]}"; do models+="${models:+,}$encoder=$(encoder_path "$encoder")"; done
  for seed in $PROBE_SEEDS; do
    if ! done_run "probe/seed$seed"; then for encoder in "${CONTINUED[@]}"; do check_encoder "$encoder"; done; fi
    stage "probe/seed$seed" "$PROBE_RECORDS" -- "$PYTHON" -m jaxmt.probe --models="$models" \
      --corpus="$DATA/corpus/wikitext2-valid.txt" --out="$RUNS/probe/seed$seed" --seed="$seed" --max_sentences=1000
  done
fi

# 3. Downstream, per encoder and seed: SQuAD (part1 -> part2) and SICK entailment.
for encoder in $ENCODERS; do
  model="$(encoder_path "$encoder")"
  for seed in $SEEDS; do
    if wants qa; then
      done_run "qa/$encoder/seed$seed" || check_encoder "$encoder"
      stage "qa/$encoder/seed$seed" "$TRAIN_RECORDS" -- "$PYTHON" -m jaxmt.qa --config=configs/paper_b_squad.py \
        --workdir="$RUNS/qa/$encoder/seed$seed" --config.model.name="$model" --config.seed="$seed" \
        --config.data.train_file="$DATA/squad/squad-v1.1-dev-part1.json" \
        --config.data.dev_file="$DATA/squad/squad-v1.1-dev-part2.json"
    fi
    if wants sick; then
      done_run "sick/$encoder/seed$seed" || check_encoder "$encoder"
      stage "sick/$encoder/seed$seed" "$TRAIN_RECORDS" -- "$PYTHON" -m jaxmt.train --config=configs/paper_b_sick.py \
        --workdir="$RUNS/sick/$encoder/seed$seed" --config.model.name="$model" --config.seed="$seed" \
        --config.data.sick_file="$DATA/sick/SICK.txt"
    fi
  done
done

# 4. Tables from the archive (mean ± std over seeds; `*` = a difference to the baseline arm beyond seed noise),
#    once every run of every encoder is archived.
if wants summary; then
  missing=()
  for run in pretrain/baseline pretrain/hierarchical; do [[ -f "$ARCHIVE/$run/results.json" ]] || missing+=("$run"); done
  for task in qa sick; do
    for encoder in "${ALL_ENCODERS[@]}"; do
      for seed in $SEEDS; do [[ -f "$ARCHIVE/$task/$encoder/seed$seed/results.json" ]] || missing+=("$task/$encoder/seed$seed"); done
    done
  done
  if ((${#missing[@]})) && [[ "$DRY_RUN" != 1 ]]; then
    echo "[paper_b] skip   summary: ${#missing[@]} runs not archived yet (${missing[*]})"
  else
    summarize() {  # summarize OUT_NAME ARGS...: a table into $ARCHIVE/OUT_NAME.md
      local out="$1"; shift
      local command=("$PYTHON" -m jaxmt.summarize "$@" --out="$ARCHIVE/$out.md")
      if [[ "$DRY_RUN" == 1 ]]; then echo "[paper_b] run    summary $out: $(printf '%q ' "${command[@]}")"; return 0; fi
      echo "[paper_b] table  $ARCHIVE/$out.md"
      "${command[@]}"
    }
    arms() { local encoder; for encoder in "${ALL_ENCODERS[@]}"; do echo "--runs=$encoder=$ARCHIVE/$1/$encoder/seed*"; done; }
    mapfile -t qa_arms < <(arms qa)
    mapfile -t sick_arms < <(arms sick)
    # Against the baseline-continued encoder (hierarchical vs baseline: the paper's comparison) and against minilm.
    summarize qa "${qa_arms[@]}" --baseline=baseline --metrics=exact_match,f1
    summarize qa_vs_minilm "${qa_arms[@]}" --baseline=minilm --metrics=exact_match,f1
    summarize sick "${sick_arms[@]}" --baseline=baseline --metrics=nli
    summarize sick_vs_minilm "${sick_arms[@]}" --baseline=minilm --metrics=nli
    # Probing: per task, layers x encoders over the probe seeds, against the baseline-continued encoder.
    summarize probe --probes="$ARCHIVE/probe/seed*" --baseline=baseline
    # Held-out pre-training metrics (one run each, so no spread): the tasks both models train.
    summarize pretrain --runs="baseline=$ARCHIVE/pretrain/baseline" --runs="hierarchical=$ARCHIVE/pretrain/hierarchical" \
      --key=heldout
  fi
fi
read -ra stage_list <<<"$STAGES"
echo "[paper_b] finished: ${stage_list[*]}; records in $ARCHIVE (commit them)"
