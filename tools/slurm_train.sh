#!/usr/bin/env bash
# Usage: tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py options]
# Environment: GPUS, GPUS_PER_NODE, CPUS_PER_TASK, SRUN_ARGS, PYTHON
# (see tools/slurm_launch.sh). Re-run with --resume after a pre-emption.
exec "$(dirname "$0")/slurm_launch.sh" "$1" "$2" train.py "$3" \
    --work-dir "$4" "${@:5}"
