#!/usr/bin/env bash
# Ours against the challenge's baseline on one GPU: same proxy shards, tokenizer and training seconds,
# then one table (scripts/bench/compare_table.py). Needs the baseline in the ignored .baseline/ (see
# scripts/bench/baseline_proxy.sh). Extra ENV=VALUE arguments go to our run only.
#   DATA=/tmp/proxy SECONDS_BUDGET=150 bash scripts/bench/compare_proxy.sh all [ENV=VALUE ...]
# `baseline` and `ours` also run one at a time, one after the other on the same machine with OUT pointing at
# the same folder; each `ours` (one per seed: `ours SEED=1338`) logs as cmp_ours_s<seed>, a variant's
# (`ours MATRIX_LR=0.02`; give its settings as arguments, which name its log) as cmp_ours_s<seed>_MATRIX_LR-0.02,
# and prints the table of the baseline and every run of ours in that folder, with each variant's mean and its
# difference to the defaults seed by seed (`table` prints it alone). Ours spends
# minutes beyond its training seconds on the compile warm-up, the pre-quantization evaluation, calibration, the
# fit to the cap, the final evaluation and its adaptation (measured times: notes/baseline_comparison.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
usage="usage: compare_proxy.sh all|baseline|ours|table [ENV=VALUE ...] (table: only print the runs in OUT)"
what=${1:?$usage}
shift
[[ $what =~ ^(all|baseline|ours|table)$ ]] || { echo "$usage" >&2; exit 2; }
export DATA=${DATA:-/tmp/proxy} SECONDS_BUDGET=${SECONDS_BUDGET:-150}
OUTDIR=$(realpath -m "${OUT:-logs}")
mkdir -p "$OUTDIR"
if [[ $what == all || $what == baseline ]]; then
  RUN_ID=cmp_baseline bash scripts/bench/baseline_proxy.sh
  DATA_PATH=$DATA TOKENIZER_PATH=$DATA/tokenizer.model python3 scripts/bench/score_baseline.py .baseline/train_gpt.py \
    .baseline/run/final_model.int8.ptz "$OUTDIR/cmp_baseline.log" 2>&1 | tee "$OUTDIR/cmp_baseline_ours_metric.log"
fi
seed=1337 variant=
for kv in "$@"; do
  if [[ $kv == SEED=* ]]; then seed=${kv#SEED=}; else kv=${kv/=/-}; variant+="_${kv//[^A-Za-z0-9_.,-]/-}"; fi
done
if [[ $what == all || $what == ours ]]; then
  OUT=$OUTDIR RUN_ID=cmp_ours_s$seed$variant bash scripts/tools/proxy_train.sh "$@"
fi
shopt -s nullglob
ours=("$OUTDIR"/cmp_ours_s*.log)
if [[ -f $OUTDIR/cmp_baseline.log && ${#ours[@]} -gt 0 ]]; then
  python3 scripts/bench/compare_table.py "$DATA" "$OUTDIR/cmp_baseline.log" "$OUTDIR/cmp_baseline_ours_metric.log" \
    "${ours[@]}" | tee "$OUTDIR/compare_table.txt"
fi
