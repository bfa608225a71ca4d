"""Prints one table row per train_gpt.py log: steps, throughput, memory, pre/post-quant bpb, bytes.

  python scripts/summarize_logs.py logs/*.log
"""

import re
import sys

FIELDS = [("steps", r"stopping: .* after (\d+) steps"), ("train_s", r"train_time:([\d.]+)s tokens"),
          ("tok/s", r"tok/s:([\d,]+)\s*$"), ("epochs", r"epochs:([\d.]+)"), ("peak_MiB", r"peak_memory:(\d+)"),
          ("pre_bpb", r"pre_quant_ema .*val_bpb:([\d.]+)"), ("post_bpb", r"roundtrip .*val_bpb:([\d.]+)"),
          ("gap", r"quant_gap_bpb:([-+\d.]+)"), ("artifact", r"artifact:\S+ bytes:(\d+)"),
          ("total", r"bytes_total:(\d+)"), ("eval_s", r"roundtrip .*eval_time:([\d.]+)s")]


def summarize(path):
    text = open(path, encoding="utf-8").read()
    row = {}
    for name, pattern in FIELDS:
        found = re.findall(pattern, text, flags=re.M)
        row[name] = found[-1] if found else "-"
    return row


def main(paths):
    print(f"{'log':28} " + " ".join(f"{n:>10}" for n, _ in FIELDS))
    for p in paths:
        row = summarize(p)
        print(f"{p.split('/')[-1][:28]:28} " + " ".join(f"{row[n]:>10}" for n, _ in FIELDS))


if __name__ == "__main__":
    main(sys.argv[1:])
