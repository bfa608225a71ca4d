"""One table from compare_proxy.sh calls: the challenge baseline and ours on the same shards and seconds.

    python3 scripts/bench/compare_table.py DATA_DIR BASELINE_LOG BASELINE_OURS_METRIC_LOG OURS_LOG [OURS_LOG ...]

Each run is scored by its own final metric; the baseline is also scored by ours (score_baseline.py), so
the two post-quantization columns separate model gains from evaluation gains. Several of our logs (seeds) give
a row each and the difference of their mean to the baseline. A run whose settings (its log's env_overrides, less
what the proxy runner sets for every run) differ from the defaults is a variant: its rows are named by those
settings, each variant gets its own mean, and a variant's difference to the defaults is taken seed by seed over
the seeds both ran. Ours post-quantization is the run's score (after score-first adaptation where the run
adapted); "fixed" is its packed file's score without adaptation.
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


# set by proxy_train.sh / compare_proxy.sh for every run (the batch at its default there): not a variant's settings
RUNNER_SETTINGS = ("ARTIFACT_PATH", "DATA_PATH", "TOKENIZER_PATH", "RUN_ID", "MAX_WALLCLOCK_SECONDS", "SEED",
                   "TRAIN_BATCH_TOKENS=98304")


def variant_and_seed(log: str) -> tuple[str, str]:
    """The settings that make a run a variant ('' for the defaults) and its seed, from its env_overrides line."""
    items = (find(r"^env_overrides: (.*)$", log) or "").split()
    seed = next((kv.split("=", 1)[1] for kv in items if kv.startswith("SEED=")), "1337")
    return " ".join(kv for kv in items if "=" in kv and kv not in RUNNER_SETTINGS
                    and kv.split("=", 1)[0] not in RUNNER_SETTINGS), seed


def ours_row(log: str) -> dict:
    post, (variant, seed) = last(OURS["val_bpb"], log), variant_and_seed(log)
    return {"run": f"ours{' ' + variant if variant else ''}, seed {seed}", "variant": variant, "seed": seed,
            "seconds": last(OURS["train_time"], log),
            "steps": last(OURS["steps"], log, int), "tokens": last(OURS["tokens"], log, int),
            "pre": last(OURS["pre_bpb"], log), "post_own": post, "post_ours": post,
            "fixed": last(OURS["fixed_bpb"], log), "artifact": last(OURS["artifact_bytes"], log, int)}


def by_variant(ours: list[dict]) -> dict[str, dict[str, float]]:
    """{variant: {seed: post-quantization bpb}}, in the order the logs came; one log per seed and variant."""
    groups = {}
    for r in ours:
        seeds = groups.setdefault(r["variant"], {})
        if r["seed"] in seeds:
            raise SystemExit(f"two logs of {r['run']}: keep one log per seed and variant in the folder")
        seeds[r["seed"]] = r["post_ours"]
    return groups


def main(data_dir, baseline_log, baseline_ours_metric_log, *ours_logs):
    read = lambda p: open(p, encoding="utf-8", errors="replace").read()  # noqa: E731
    n_train = train_tokens(data_dir)
    base = baseline_row(read(baseline_log), read(baseline_ours_metric_log))
    ours = [ours_row(read(p)) for p in ours_logs]
    groups, w = by_variant(ours), max(len(r["run"]) + 1 for r in [base] + ours)
    print(f"{'run':<{w}}{'train s':>8}{'steps':>7}{'tokens':>14}{'epochs':>7}{'tok/s':>11}{'pre bpb':>9}"
          f"{'post (own)':>11}{'post (ours)':>12}{'fixed':>9}{'artifact B':>12}")
    for r in [base] + ours:
        fixed = f"{r['fixed']:>9.5f}" if "fixed" in r else f"{'-':>9}"
        print(f"{r['run']:<{w}}{r['seconds']:>8.1f}{r['steps']:>7}{r['tokens']:>14,}{r['tokens'] / n_train:>7.2f}"
              f"{r['tokens'] / r['seconds']:>11,.0f}{r['pre']:>9.4f}{r['post_own']:>11.5f}{r['post_ours']:>12.5f}"
              f"{fixed}{r['artifact']:>12,}")
    for r in ours:
        print(f"{r['run']} - baseline, post-quantization, our metric: {r['post_ours'] - base['post_ours']:+.5f} bpb")
    for v, seeds in groups.items():
        name = f"ours {v}" if v else "ours"
        if len(seeds) > 1:
            print(f"mean of {len(seeds)} of {name} - baseline: "
                  f"{np.mean(list(seeds.values())) - base['post_ours']:+.5f} bpb")
        paired = sorted(set(seeds) & set(groups.get("", {}))) if v else []
        if paired:
            deltas = [seeds[s] - groups[""][s] for s in paired]
            print(f"{name} - ours, seeds {', '.join(paired)}: {', '.join(f'{d:+.5f}' for d in deltas)} "
                  f"(mean {np.mean(deltas):+.5f} bpb)")
    print(f"adapter check: baseline's own val_loss {base['own_loss']:.5f}, ours over the same disjoint windows "
          f"{base['disjoint_loss']:.5f}")


if __name__ == "__main__":
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    main(*sys.argv[1:])
