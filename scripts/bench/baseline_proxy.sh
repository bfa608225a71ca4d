#!/usr/bin/env bash
# Runs the challenge's own baseline train_gpt.py, as published, on the proxy shards on one GPU, logging
# under $OUT (or ./logs). Fetch it first into the ignored .baseline/ folder (never commit it):
#   git -C <clone of openai/parameter-golf> show 4908dc46f:train_gpt.py > .baseline/train_gpt.py
#   DATA=/tmp/proxy SECONDS_BUDGET=300 bash scripts/bench/baseline_proxy.sh
set -euo pipefail
DATA=${DATA:-/tmp/proxy}
OUTDIR=$(realpath -m "${OUT:-logs}")
mkdir -p "$OUTDIR" .baseline/run
export DATA_PATH=$DATA TOKENIZER_PATH=$DATA/tokenizer.model RUN_ID=${RUN_ID:-baseline} \
       MAX_WALLCLOCK_SECONDS=${SECONDS_BUDGET:-300} VAL_LOSS_EVERY=0 PYTHONUNBUFFERED=1
cd .baseline/run && python3 ../train_gpt.py 2>&1 | tee "$OUTDIR/$RUN_ID.log"
