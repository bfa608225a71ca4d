"""How much does score-first test-time training buy, and at what settings? Scores one packed artifact as
train_gpt.py's --eval does (the fixed model first), then once per variant with score-first adaptation,
each from a fresh copy of the packed weights. Prints one table: val_bpb, its difference to the fixed
score, and the seconds each score took.

    python3 scripts/bench/ttt_study.py final_model.int6.ptz \
        --variant "3 epochs: TTT_EPOCHS=3" --variant "lr 0.004: TTT_EPOCHS=3 TTT_LR=0.004" [--out table.md]

Each --variant is "LABEL: KEY=VALUE ...", overrides of train_gpt's Hyperparameters (environment variable
names); the rest comes from the environment exactly as for train_gpt.py (DATA_PATH, TOKENIZER_PATH, EVAL_*,
TTT_*). The artifact is checked (checksum, tokenizer, cap with train_gpt.py's size as the code) first.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
import train_gpt as tg  # noqa: E402
from scripts.common import parse_variant, print_table, variant_study_options  # noqa: E402


def study(blob: bytes, args, variants: list[str], val_tokens, luts, device) -> list[dict]:
    jobs = [("fixed (no adaptation)", args, False)] + [(*parse_variant(v, args), True) for v in variants]
    rows = []
    for label, a, adapt in jobs:
        print(f"=== {label}", flush=True)
        result = tg.evaluate(tg.model_from_blob(blob, device), val_tokens, luts, a, adapt_weights=adapt)
        rows.append(dict(label=label, bpb=result["val_bpb"], seconds=result["seconds"], tokens=result["tokens"]))
        print(f"{label}: val_bpb {result['val_bpb']:.5f} in {result['seconds']:.1f}s", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    out = ["| variant | val_bpb | Δ vs fixed | eval s |", "|---|---|---|---|"]
    out += [f"| {r['label']} | {r['bpb']:.5f} | {r['bpb'] - rows[0]['bpb']:+.5f} | {r['seconds']:.1f} |" for r in rows]
    return "\n".join(out)


def main():
    cli = argparse.ArgumentParser(usage=__doc__)
    cli.add_argument("artifact")
    args = tg.Hyperparameters()
    opt = variant_study_options(cli, args)
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    tg.start_logging()
    blob = tg.checked_artifact(opt.artifact, tg.tokenizer_sha256(args), len(Path(tg.__file__).read_bytes()),
                               args.artifact_cap_bytes)
    val_tokens, luts = tg.load_eval_data(args, device)
    print_table(table(study(blob, args, opt.variant, val_tokens, luts, device)), opt.out)


if __name__ == "__main__":
    main()
