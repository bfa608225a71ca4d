#!/usr/bin/env bash
# The main job on the embedded sample, offline: builds a small export from data/sample (tokenizer
# trained with the challenge's settings), trains a tiny GDN-Hybrid with the real train_gpt.py for
# SECONDS (default 120) of training time, quantizes, packs, reloads the artifact and prints val_bpb, fixed
# and after score-first adaptation.
# CPU when there is no GPU; on a GPU the same command uses the fla kernels. Logs: logs/sample.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 data/build_proxy.py --inputs data/sample/sample_docs.jsonl.zst --out data/sample_export \
  --val-docs 60 --tokenizer-train-docs 1000
export DATA_PATH=data/sample_export TOKENIZER_PATH=data/sample_export/tokenizer.model RUN_ID=sample \
  ARTIFACT_PATH=logs/sample.ptz MAX_WALLCLOCK_SECONDS=${SECONDS_BUDGET:-120} \
  MODEL_DIM=128 NUM_HEADS=2 NUM_KV_HEADS=1 GDN_PER_GROUP=2 SWA_WINDOW=128 TRAIN_SEQ_LEN=256 \
  MICRO_BATCH_SEQS=8 TRAIN_BATCH_TOKENS=4096 COMPILE_WARMUP_STEPS=1 LR_WARMUP_STEPS=10 TRAIN_LOG_EVERY=25 \
  EVAL_SEQ_LEN=256 EVAL_STRIDE=128 EVAL_BATCH_SEQS=16 TTT_CHUNK_TOKENS=4096 TTT_SEQ_LEN=256 CALIB_SEQS=8 \
  CALIB_LEN=128 GPTQ_BLOCK=64
python3 train_gpt.py
