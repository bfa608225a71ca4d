#!/usr/bin/env bash
# Versions of train_gpt.py side by side at equal steps on one GPU: each trains in its own copy of this tree under
# /tmp (this tree's scripts, that version as train_gpt.py) through scripts/bench/proxy_trials.sh, for ITERATIONS steps
# per seed in SEEDS, scored on the first VAL_TOKENS validation tokens of the proxy under DATA. Logs and JSON rows
# land in $OUT (or ./logs) as eq_<i>_<name>.*; one table of every version's rows comes last, each against the
# first version's row of the same seed.
#   DATA=/tmp/proxy ITERATIONS=300 SEEDS="1337 1338" bash scripts/bench/equal_steps.sh train_gpt.py .prev/relu2_tma.py
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 1 ] || { echo "usage: $0 VERSION.py [VERSION.py ...]   (copies of train_gpt.py)" >&2; exit 2; }
for v in "$@"; do [ -f "$v" ] || { echo "no such version: $v" >&2; exit 2; }; done
OUTDIR=$(realpath -m "${OUT:-logs}")
mkdir -p "$OUTDIR"
variants=()
for seed in ${SEEDS:-1337}; do variants+=("ITERATIONS=${ITERATIONS:-300} SEED=$seed"); done
names=()
for i in $(seq 1 $#); do
  v=${!i}
  name=${i}_$(basename "$v" .py)
  names+=("$name")
  tree=/tmp/equal_steps/$name
  rm -rf "$tree" && mkdir -p "$tree" && cp -r scripts "$tree"/ && cp "$v" "$tree/train_gpt.py"
  echo "=== $v: ${#variants[@]} seed(s), log $OUTDIR/eq_$name.log" >&2
  (cd "$tree" && OUT=$OUTDIR NAME=eq_$name SECONDS_BUDGET=0 VAL_TOKENS=${VAL_TOKENS:-1048576} \
     bash scripts/bench/proxy_trials.sh "${variants[@]}" > /dev/null) || echo "$v: failed, see $OUTDIR/eq_$name.log" >&2
done
python3 - "$OUTDIR" "${names[@]}" <<'EOF'
import json, sys
from pathlib import Path
out, names = Path(sys.argv[1]), sys.argv[2:]
rows = {n: [json.loads(line) for line in (out / f"eq_{n}.jsonl").read_text().splitlines()]
        if (out / f"eq_{n}.jsonl").is_file() else [] for n in names}
first = {r["variant"]: r for r in rows[names[0]] if "error" not in r}
print("| version | steps, seed | steps | tokens/s | val_bpb | vs first version |\n|---|---|---|---|---|---|")
for n in names:
    for r in rows[n] or [{"variant": "-", "error": "no rows"}]:
        if "error" in r:
            print(f"| {n} | {r['variant']} | failed: {r['error'][:60]} | | | |")
            continue
        ref = first.get(r["variant"])
        diff = f"{r['val_bpb'] - ref['val_bpb']:+.5f}" if ref else "-"
        print(f"| {n} | {r['variant']} | {r['steps']} | {r['tok_per_s']:,.0f} | {r['val_bpb']:.5f} | {diff} |")
EOF
