"""One table from compare_proxy.sh calls: the challenge baseline and ours on the same shards and seconds.

    python3 scripts/bench/compare_table.py DATA_DIR BASELINE_LOG BASELINE_OURS_METRIC_LOG OURS_LOG [OURS_LOG ...]

Each run is scored by its own final metric; the baseline is also scored by ours (score_baseline.py), so
the two post-quantization columns separate model gains from evaluation gains. Several of our logs (seeds) give
a row each and the difference of their mean to the baseline. Ours post-quantization is the run's score (after
score-first adaptation where the run adapted); "fixed" is its packed file's score without adaptation.
"""

from __future__ import annotations

import glob
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
from scripts.common import BASELINE, OURS, find  # noqa: E402


def last(pattern: str, text: str, cast=float):
    found = find(pattern, text)
    if found is None:
        raise ValueError(f"no line matches {pattern!r}: did the run finish?")
    return cast(found.replace(",", ""))


def train_tokens(data_dir: str) -> int:
    files = glob.glob(f"{data_dir}/fineweb_train_*.bin")
    if not files:
        raise SystemExit(f"no fineweb_train_*.bin in {data_dir}: pass the proxy folder the runs trained on")
    return sum(int(np.fromfile(f, dtype="<i4", count=3)[2]) for f in files)


def baseline_row(log: str, ours_metric: str) -> dict:
    steps = last(BASELINE["steps"], log, int)
    return {"run": "challenge baseline", "seconds": last(BASELINE["train_ms"], log) / 1000, "steps": steps,
            "tokens": steps * last(BASELINE["batch_tokens"], log, int), "pre": last(BASELINE["pre_bpb"], log),
            "post_own": last(BASELINE["val_bpb"], log), "post_ours": last(BASELINE["ours_metric_bpb"], ours_metric),
            "own_loss": last(BASELINE["val_loss"], log), "disjoint_loss": last(BASELINE["disjoint_loss"], ours_metric),
            "artifact": last(BASELINE["artifact_bytes"], log, int)}


def ours_row(log: str) -> dict:
    post, seed = last(OURS["val_bpb"], log), find(r"^env_overrides: .*\bSEED=(\d+)", log) or "1337"
    return {"run": f"ours, seed {seed}", "seconds": last(OURS["train_time"], log),
            "steps": last(OURS["steps"], log, int), "tokens": last(OURS["tokens"], log, int),
            "pre": last(OURS["pre_bpb"], log), "post_own": post, "post_ours": post,
            "fixed": last(OURS["fixed_bpb"], log), "artifact": last(OURS["artifact_bytes"], log, int)}


def main(data_dir, baseline_log, baseline_ours_metric_log, *ours_logs):
    read = lambda p: open(p, encoding="utf-8", errors="replace").read()  # noqa: E731
    n_train = train_tokens(data_dir)
    base = baseline_row(read(baseline_log), read(baseline_ours_metric_log))
    ours = [ours_row(read(p)) for p in ours_logs]
    print(f"{'run':<20}{'train s':>8}{'steps':>7}{'tokens':>14}{'epochs':>7}{'tok/s':>11}{'pre bpb':>9}"
          f"{'post (own)':>11}{'post (ours)':>12}{'fixed':>9}{'artifact B':>12}")
    for r in [base] + ours:
        fixed = f"{r['fixed']:>9.5f}" if "fixed" in r else f"{'-':>9}"
        print(f"{r['run']:<20}{r['seconds']:>8.1f}{r['steps']:>7}{r['tokens']:>14,}{r['tokens'] / n_train:>7.2f}"
              f"{r['tokens'] / r['seconds']:>11,.0f}{r['pre']:>9.4f}{r['post_own']:>11.5f}{r['post_ours']:>12.5f}"
              f"{fixed}{r['artifact']:>12,}")
    for r in ours:
        print(f"{r['run']} - baseline, post-quantization, our metric: {r['post_ours'] - base['post_ours']:+.5f} bpb")
    if len(ours) > 1:
        mean = sum(r["post_ours"] for r in ours) / len(ours)
        print(f"mean of {len(ours)} of ours - baseline: {mean - base['post_ours']:+.5f} bpb")
    print(f"adapter check: baseline's own val_loss {base['own_loss']:.5f}, ours over the same disjoint windows "
          f"{base['disjoint_loss']:.5f}")


if __name__ == "__main__":
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    main(*sys.argv[1:])
