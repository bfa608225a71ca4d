#!/usr/bin/env bash
# Trains, quantizes and scores train_gpt.py on proxy shards on one GPU, logging under $OUT (or ./logs).
#   DATA=/tmp/proxy SECONDS_BUDGET=300 RUN_ID=name bash scripts/proxy_train.sh [ENV=VALUE ...]
# Proxy defaults: a 196,608-token global batch (96 x 2048), so that one GPU takes about as many
# optimizer steps in its budget as 8 GPUs take with the full 786,432-token batch.
set -euo pipefail
DATA=${DATA:-/tmp/proxy}
OUTDIR=${OUT:-logs}
run=${RUN_ID:-proxy}
export DATA_PATH=$DATA TOKENIZER_PATH=$DATA/tokenizer.model RUN_ID=$run ARTIFACT_PATH=/tmp/$run.ptz \
       TRAIN_BATCH_TOKENS=${TRAIN_BATCH_TOKENS:-196608} MAX_WALLCLOCK_SECONDS=${SECONDS_BUDGET:-300} PYTHONUNBUFFERED=1
for kv in "$@"; do export "${kv?}"; done
python3 train_gpt.py 2>&1 | tee "$OUTDIR/$run.log"
