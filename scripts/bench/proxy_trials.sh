#!/usr/bin/env bash
# scripts/bench/trials.py on proxy shards with the proxy's one-GPU batch (as scripts/tools/proxy_train.sh), log and
# JSON rows under $OUT (or ./logs); the table is printed last.
#   DATA=/tmp/proxy NAME=trials1 SECONDS_BUDGET=100 VAL_TOKENS=1048576 [QUANT=1] bash scripts/bench/proxy_trials.sh base SEED=1338 ...
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:-/tmp/proxy}
OUTDIR=${OUT:-logs}
name=${NAME:-trials}
mkdir -p "$OUTDIR"
export DATA_PATH=$DATA TOKENIZER_PATH=$DATA/tokenizer.model TRAIN_BATCH_TOKENS=${TRAIN_BATCH_TOKENS:-98304} \
       PYTHONUNBUFFERED=1
python3 scripts/bench/trials.py --seconds "${SECONDS_BUDGET:-100}" --val-tokens "${VAL_TOKENS:-0}" ${QUANT:+--quant} \
  --out "$OUTDIR/$name.jsonl" "$@" 2>&1 | tee "$OUTDIR/$name.log" | grep -v -e DeprecationWarning -e create_block_mask -e TileLang
