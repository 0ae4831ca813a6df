#!/usr/bin/env bash
# Usage: tools/slurm_launch.sh PARTITION JOB_NAME SCRIPT [script arguments]
# Runs tools/SCRIPT as GPUS srun tasks with --launcher slurm.
# Environment (MMDetection's): GPUS (default 8), GPUS_PER_NODE (8),
# CPUS_PER_TASK (5), SRUN_ARGS (extra srun options, e.g. "--quotatype=auto"
# or "--time=72:00:00"), PYTHON.
set -eu
source "$(dirname "$0")/launch_env.sh"
PARTITION=$1
JOB_NAME=$2
SCRIPT=$3
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
require_count GPUS "$GPUS"
require_count GPUS_PER_NODE "$GPUS_PER_NODE"
require_count CPUS_PER_TASK "$CPUS_PER_TASK"

# SRUN_ARGS is split into words on purpose: it holds several options.
# shellcheck disable=SC2086
exec srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    $SRUN_ARGS \
    "$PYTHON" -u "$REPO/tools/$SCRIPT" "${@:4}" --launcher slurm
