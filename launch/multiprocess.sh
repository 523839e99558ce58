#!/usr/bin/env bash
# Runs a jaxmt command (--module, default jaxmt.train) as N cooperating processes on this machine, each
# with M emulated CPU devices, joined through jax.distributed on 127.0.0.1 (gloo collectives): a multi-host
# run without the hosts. Each process logs to LOG_DIR/process_<i>.log; the exit status is the first
# failing process's. The processes meet through --config.parallel.*, so the command's config needs a
# `parallel` block (every shipped config has one: docs/scaling.md).
#
#   launch/multiprocess.sh [--module jaxmt.train] [--num-processes N] [--cpu-devices M] [--port P] [--log-dir DIR]
#       [--python PY] [--dry-run] -- --config=configs/pcgrad.py --workdir=runs/x
set -euo pipefail

module="jaxmt.train"
num_processes=2
cpu_devices=2
port=12355
log_dir="runs/multiprocess-logs"
dry_run=0
python="${PYTHON:-python3}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --module) module="$2"; shift 2 ;;
    --num-processes) num_processes="$2"; shift 2 ;;
    --cpu-devices) cpu_devices="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --log-dir) log_dir="$2"; shift 2 ;;
    --python) python="$2"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "launch/multiprocess.sh: unknown option $1 (trainer flags go after --)" >&2; exit 2 ;;
  esac
done

for pair in "num-processes:$num_processes" "cpu-devices:$cpu_devices" "port:$port"; do
  if ! [[ "${pair#*:}" =~ ^[1-9][0-9]*$ ]]; then
    echo "launch/multiprocess.sh: --${pair%%:*} needs a positive integer, got '${pair#*:}'" >&2
    exit 2
  fi
done

if ! [[ "$module" =~ ^jaxmt\.[a-z_]+$ && -f "$(dirname "$0")/../${module/.//}.py" ]]; then
  echo "launch/multiprocess.sh: --module $module is not a jaxmt command (e.g. jaxmt.train, jaxmt.pretrain, jaxmt.qa)" >&2
  exit 2
fi

# One command per process: the same trainer flags, plus where to meet and which process it is.
commands=()
for ((i = 0; i < num_processes; i++)); do
  command=(env JAX_PLATFORMS=cpu "XLA_FLAGS=--xla_force_host_platform_device_count=${cpu_devices}"
           "$python" -m "$module" "$@"
           "--config.parallel.coordinator_address=127.0.0.1:${port}"
           "--config.parallel.num_processes=${num_processes}" "--config.parallel.process_id=${i}")
  commands+=("$(printf '%q ' "${command[@]}")> $(printf '%q' "${log_dir}/process_${i}.log") 2>&1")
done

if [[ "$dry_run" == 1 ]]; then
  printf 'mkdir -p %q\n' "$log_dir"
  printf '%s &\n' "${commands[@]}"
  echo "wait"
  exit 0
fi

cd "$(dirname "$0")/.."
mkdir -p "$log_dir"
pids=()
for command in "${commands[@]}"; do
  bash -c "exec $command" &
  pids+=("$!")
done

# Wait for all; once one fails the others would wait forever for its collectives, so stop them.
status=0
remaining=("${pids[@]}")
while [[ ${#remaining[@]} -gt 0 ]]; do
  finished=0
  wait -n "${remaining[@]}" || finished=$?
  still=()
  for pid in "${remaining[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then still+=("$pid"); fi
  done
  remaining=("${still[@]+"${still[@]}"}")
  if [[ "$finished" != 0 && "$status" == 0 ]]; then
    status=$finished
    echo "launch/multiprocess.sh: a process exited with status $status; stopping the others (logs in $log_dir)" >&2
    for pid in "${remaining[@]+"${remaining[@]}"}"; do kill "$pid" 2>/dev/null || true; done
  fi
done
exit "$status"
