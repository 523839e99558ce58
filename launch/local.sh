#!/usr/bin/env bash
# Runs a jaxmt command (--module, default jaxmt.train) on this machine: on its accelerators, or on
# N emulated CPU devices (to try a data-parallel mesh on a laptop). Everything after -- goes to the command.
#
#   launch/local.sh [--module jaxmt.pretrain] [--cpu-devices N] [--dry-run] [--python PY] \
#       -- --config=configs/pcgrad.py --workdir=runs/x
set -euo pipefail

module="jaxmt.train"
cpu_devices=""
dry_run=0
python="${PYTHON:-python3}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --module) module="$2"; shift 2 ;;
    --cpu-devices) cpu_devices="$2"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    --python) python="$2"; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "launch/local.sh: unknown option $1 (trainer flags go after --)" >&2; exit 2 ;;
  esac
done

if ! [[ "$module" =~ ^jaxmt\.[a-z_]+$ && -f "$(dirname "$0")/../${module/.//}.py" ]]; then
  echo "launch/local.sh: --module $module is not a jaxmt command (e.g. jaxmt.train, jaxmt.pretrain, jaxmt.qa)" >&2
  exit 2
fi
env_vars=()
if [[ -n "$cpu_devices" ]]; then
  if ! [[ "$cpu_devices" =~ ^[1-9][0-9]*$ ]]; then
    echo "launch/local.sh: --cpu-devices needs a positive integer, got '$cpu_devices'" >&2
    exit 2
  fi
  env_vars+=("JAX_PLATFORMS=cpu" "XLA_FLAGS=--xla_force_host_platform_device_count=${cpu_devices}")
fi
command=(env "${env_vars[@]}" "$python" -m "$module" "$@")

if [[ "$dry_run" == 1 ]]; then
  printf '%q ' "${command[@]}"
  echo
  exit 0
fi
cd "$(dirname "$0")/.."
exec "${command[@]}"
