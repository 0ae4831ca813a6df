#!/usr/bin/env bash
# Usage: tools/dist_train.sh CONFIG GPUS [train.py options]
# Environment: NNODES, NODE_RANK, PORT, MASTER_ADDR, PYTHON.
exec "$(dirname "$0")/dist_launch.sh" train.py "$2" "$1" "${@:3}"
