#!/usr/bin/env bash
# Trains, quantizes and scores train_gpt.py on proxy shards on one GPU, logging under $OUT (or ./logs).
#   DATA=/tmp/proxy SECONDS_BUDGET=300 RUN_ID=name bash scripts/tools/proxy_train.sh [ENV=VALUE ...]
# Proxy default: a 98,304-token global batch (one micro-batch of 48 x 2048), which is one GPU's share of
# the 786,432-token batch of 8 GPUs, so one GPU takes about as many optimizer steps per second as 8 do.
# It beat 196,608 by 0.033 / 0.044 bpb in 100 s trials (2 seeds) and by 0.0094 post-GPTQ at 300 s (1×H100; notes/batch_size.md).
set -euo pipefail
DATA=${DATA:-/tmp/proxy}
OUTDIR=${OUT:-logs}
run=${RUN_ID:-proxy}
export DATA_PATH=$DATA TOKENIZER_PATH=$DATA/tokenizer.model RUN_ID=$run ARTIFACT_PATH=/tmp/$run.ptz \
       TRAIN_BATCH_TOKENS=${TRAIN_BATCH_TOKENS:-98304} MAX_WALLCLOCK_SECONDS=${SECONDS_BUDGET:-300} PYTHONUNBUFFERED=1
for kv in "$@"; do export "${kv?}"; done
# Every 2 s, the Unix time and the GPU's SM clock, temperature, power, clock-event reasons and power limit go
# beside the log: scripts/tools/step_pace.py reads the run's slow stretches of steps against them.
if command -v nvidia-smi > /dev/null; then
  query=clocks.sm,temperature.gpu,power.draw,clocks_event_reasons.active,power.limit
  while :; do  # each sample written whole in one line, so that stopping the sampler leaves no half line
    sample="$(date +%s.%N), $(nvidia-smi -i 0 --format=csv,noheader,nounits --query-gpu=$query 2>&1)" || {
      echo "$sample"; exit; }
    echo "$sample"
    sleep 2
  done > "$OUTDIR/${run}_gpu.csv" &
  sampler=$!
  trap 'kill $sampler 2> /dev/null' EXIT
  echo "GPU samples: $OUTDIR/${run}_gpu.csv"
fi
python3 train_gpt.py 2>&1 | tee "$OUTDIR/$run.log"
