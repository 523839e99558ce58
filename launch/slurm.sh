#!/usr/bin/env bash
# Submits a multi-node GPU job of a jaxmt command (--module, default jaxmt.train) to SLURM: one task per
# node, each driving all of its node's GPUs; `srun` starts the tasks and jax.distributed finds its peers
# from SLURM's environment (SLURM_NTASKS, SLURM_PROCID, SLURM_STEP_NODELIST). The batch script is kept as
# LOG_DIR/<job name>.sbatch and the job logs to LOG_DIR/<job name>-<job id>.out. The workdir must
# be on a filesystem every node shares.
#
#   launch/slurm.sh [--module jaxmt.train] [--nodes 2] [--gpus-per-node 8] [--cpus-per-task 32] [--time 04:00:00]
#       [--partition P] [--job-name jaxmt] [--log-dir runs/slurm-logs] [--python python3] [--dry-run] \
#       -- --config=... --workdir=...
set -euo pipefail

module="jaxmt.train"
nodes=2
gpus_per_node=8
cpus_per_task=32
time_limit="04:00:00"
partition=""
job_name="jaxmt"
log_dir="runs/slurm-logs"
python="${PYTHON:-python3}"
dry_run=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --module) module="$2"; shift 2 ;;
    --nodes) nodes="$2"; shift 2 ;;
    --gpus-per-node) gpus_per_node="$2"; shift 2 ;;
    --cpus-per-task) cpus_per_task="$2"; shift 2 ;;
    --time) time_limit="$2"; shift 2 ;;
    --partition) partition="$2"; shift 2 ;;
    --job-name) job_name="$2"; shift 2 ;;
    --log-dir) log_dir="$2"; shift 2 ;;
    --python) python="$2"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "launch/slurm.sh: unknown option $1 (trainer flags go after --)" >&2; exit 2 ;;
  esac
done
for pair in "nodes:$nodes" "gpus-per-node:$gpus_per_node" "cpus-per-task:$cpus_per_task"; do
  if ! [[ "${pair#*:}" =~ ^[1-9][0-9]*$ ]]; then
    echo "launch/slurm.sh: --${pair%%:*} needs a positive integer, got '${pair#*:}'" >&2
    exit 2
  fi
done
if ! [[ "$module" =~ ^jaxmt\.[a-z_]+$ && -f "$(dirname "$0")/../${module/.//}.py" ]]; then
  echo "launch/slurm.sh: --module $module is not a jaxmt command (e.g. jaxmt.train, jaxmt.pretrain, jaxmt.qa)" >&2
  exit 2
fi

repo="$(cd "$(dirname "$0")/.." && pwd)"
partition_line=""
if [[ -n "$partition" ]]; then partition_line="#SBATCH --partition=${partition}"; fi
batch_script="#!/usr/bin/env bash
#SBATCH --job-name=${job_name}
#SBATCH --nodes=${nodes}
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=${gpus_per_node}
#SBATCH --cpus-per-task=${cpus_per_task}
#SBATCH --time=${time_limit}
#SBATCH --output=${log_dir}/%x-%j.out
${partition_line}
set -euo pipefail
cd $(printf '%q' "$repo")
srun --kill-on-bad-exit=1 $(printf '%q ' "$python" -m "$module" "$@")"

script_path="${log_dir}/${job_name}.sbatch"
if [[ "$dry_run" == 1 ]]; then
  printf 'cd %q\nmkdir -p %q\n' "$repo" "$log_dir"
  printf "cat > %q <<'SBATCH'\n%s\nSBATCH\n" "$script_path" "$batch_script"
  printf 'sbatch %q\n' "$script_path"
  exit 0
fi
cd "$repo"
mkdir -p "$log_dir"
printf '%s\n' "$batch_script" >"$script_path"
sbatch "$script_path"
