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
# The first node's torchrun listens on PORT: if something else holds it,
# say so here instead of torchrun's DistNetworkError traceback (bound with
# SO_REUSEADDR, as torch binds, so a port in TIME_WAIT counts as free).
if [ "$NODE_RANK" -eq 0 ] && ! "$PYTHON" -c "
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(('', int(sys.argv[1])))
except OSError:
    sys.exit(1)
" "$PORT"; then
    echo "error: PORT=$PORT is in use on this machine (another run?):" \
        "set PORT to a free port (e.g. PORT=$((PORT + 1)))" >&2
    exit 1
fi

exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$REPO/tools/$SCRIPT" \
    "${@:3}" \
    --launcher pytorch
