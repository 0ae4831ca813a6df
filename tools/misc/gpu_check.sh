#!/usr/bin/env bash
# The GPU check, one command, about 10 minutes on one GPU: the tests marked
# for CUDA (CUDA vs CPU outputs on the same weights, fp16 and bf16 training
# steps, attention with dropout, NCCL with two GPUs), then the benchmark on
# CUDA in float32 and under --amp for K=1 and K=11, printed as one table.
#   tools/misc/gpu_check.sh            (PYTHON=... to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python}
if ! "$PYTHON" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())'; then
    echo "error: no CUDA device visible to $PYTHON" >&2
    exit 1
fi
"$PYTHON" -m pytest -m cuda -q -p no:cacheprovider tests
"$PYTHON" tools/analysis_tools/compare_detectors.py --device cuda --amp \
    --baseline ours --repeats 10 --warmup 3 \
    --models ours=configs/conditional_detr/conditional_detr_r50_8x2_50e_coco.py \
    group-k11=configs/group_detr/group_conditional_detr_r50_8x2_50e_coco.py \
    --out work_dirs/gpu_check/benchmark.json
