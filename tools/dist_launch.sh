#!/usr/bin/env bash
# Usage: tools/dist_launch.sh SCRIPT GPUS [script arguments]
# Runs tools/SCRIPT in GPUS processes through torchrun with --launcher
# pytorch. Without GPUs the processes run on the CPU over gloo.
SCRIPT=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-python}
TOOLS="$(cd "$(dirname "$0")" && pwd)"

PYTHONPATH="$TOOLS/..":$PYTHONPATH \
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$TOOLS/$SCRIPT" \
    "${@:3}" \
    --launcher pytorch
