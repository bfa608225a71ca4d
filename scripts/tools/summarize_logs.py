"""Prints one table row per train_gpt.py log: steps, throughput, memory, pre/post-quant bpb, the score (after
score-first adaptation where the run adapted), bytes.

  python3 scripts/tools/summarize_logs.py logs/*.log
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
from scripts.common import fields  # noqa: E402

COLUMNS = [("steps", "steps"), ("train_s", "train_time"), ("tok/s", "tok_s"), ("epochs", "epochs"),
           ("peak_MiB", "peak_mib"), ("pre_bpb", "pre_bpb"), ("post_bpb", "fixed_bpb"), ("gap", "gap"),
           ("score_bpb", "val_bpb"), ("artifact", "artifact_bytes"), ("total", "bytes_total"), ("eval_s", "eval_s")]


def summarize(path):
    found = fields(open(path, encoding="utf-8").read())
    return {name: found[key] or "-" for name, key in COLUMNS}


def main(paths):
    print(f"{'log':28} " + " ".join(f"{n:>10}" for n, _ in COLUMNS))
    for p in paths:
        row = summarize(p)
        print(f"{p.split('/')[-1][:28]:28} " + " ".join(f"{row[n]:>10}" for n, _ in COLUMNS))


if __name__ == "__main__":
    main(sys.argv[1:])
