#!/usr/bin/env bash
# Usage: tools/dist_launch.sh SCRIPT GPUS [script arguments]
# Runs tools/SCRIPT in GPUS processes per node through torchrun with
# --launcher pytorch. Without GPUs the processes run on the CPU over gloo.
# Environment: NNODES, NODE_RANK, MASTER_ADDR, PORT (multi-node), PYTHON.
source "$(dirname "$0")/launch_env.sh"
SCRIPT=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
require_count "the process count (GPUS)" "$GPUS"
require_count NNODES "$NNODES"
require_count NODE_RANK "$NODE_RANK" 0
if [ "$NODE_RANK" -ge "$NNODES" ]; then
    echo "error: NODE_RANK=$NODE_RANK must be below NNODES=$NNODES" >&2
    exit 1
fi
require_count PORT "$PORT"

exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$REPO/tools/$SCRIPT" \
    "${@:3}" \
    --launcher pytorch
