"""Proxy trials side by side: each variant trains train_gpt.py's model in this one process, on the same
GPU, shards and step (or wall-clock) budget, and is scored before quantization with train_gpt's own
sliding-window evaluation. Prints one table, with each row's difference to the first.

    python3 scripts/bench/trials.py --seconds 100 --val-tokens 1048576 --out trials.jsonl \
        base SEED=1338 "MATRIX_LR=0.03" "base EVAL_SEQ_LEN=1024"
    python3 scripts/bench/trials.py --seconds 280 --val-tokens 1048576 --quant base "CALIB_SEQS=128"

A variant is "base" (the defaults) or a space-separated list of KEY=VALUE overrides of train_gpt's
Hyperparameters (the environment variable names). Variants that differ only in EVAL_* keys and, with
--quant, in the packing's (CALIB_*, GPTQ_*, QUANT_*, EMBED_BITS, FIT_SLACK_BYTES, ARTIFACT_CAP_BYTES)
share one trained model, and each packing of it is done once. Settings not overridden come from the
environment exactly as for train_gpt.py (DATA_PATH, TOKENIZER_PATH, TRAIN_BATCH_TOKENS, ...). --seconds
sets MAX_WALLCLOCK_SECONDS for every variant (0: ITERATIONS alone ends training). --val-tokens scores
the first N validation tokens only, the same N for every row, so rows compare but are not
full-validation scores. --quant also scores each trained model as train_gpt.py ships it: self-generated
calibration, GPTQ fitted to the byte cap with train_gpt.py's own size as the code, packed and reloaded
from the bytes; with --ema-decays, each of the averages as well. --ema-decays D,... keeps EMAs of the
weights at those decays beside train_gpt's own (EMA_DECAY) in each training run, with the same decay
ramp (0: the final weights), and scores each in a row of its own, "<variant> [EMA D]": one run compares
the decays on one trajectory. The ramp n/(n+10) reaches a decay d only after 10d/(1-d) steps (0.997:
3,324), so two decays that neither bind within the run's steps score the same weights, as does a decay
equal to EMA_DECAY's (0 by default); the log says so, and --quant packs those weights once. Each extra
EMA above 0 costs its run the time of one EMA update a step (~0.6 ms on 1xH200), so its rows' steps
compare with runs without them only roughly. A variant that fails (an error in training or evaluation)
is logged with its traceback and kept in the table as failed; the others still run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
import train_gpt as tg  # noqa: E402
from scripts.common import with_overrides  # noqa: E402


# settings read only when the trained weights are calibrated, quantized and packed
PACKING_KEYS = ("CALIB_", "GPTQ_", "QUANT_", "EMBED_BITS", "FIT_SLACK_BYTES", "ARTIFACT_CAP_BYTES")


def parse_variant(text: str, quant: bool = False) -> tuple[dict, dict, dict]:
    """(training, packing, evaluation) overrides, keys as Hyperparameters attribute names."""
    train, packing, evals = {}, {}, {}
    for item in text.split():
        if item == "base":
            continue
        key, sep, value = item.partition("=")
        if not sep or not hasattr(tg.Hyperparameters, key.lower()):
            raise SystemExit(f"bad variant item {item!r}: expected base or KEY=VALUE with KEY a train_gpt setting")
        if key.startswith("TTT_"):  # trials score the float model without adaptation
            raise SystemExit(f"{item!r}: trials never adapt; score a packed file's adaptation with ttt_study.py")
        if key.startswith(PACKING_KEYS) and not quant:
            raise SystemExit(f"{item!r} changes only the packed copy, which trials score with --quant: add it")
        part = evals if key.startswith("EVAL_") else packing if key.startswith(PACKING_KEYS) else train
        part[key.lower()] = value
    return train, packing, evals


def ema_with_others(decays: tuple[float, ...]) -> type:
    """train_gpt's EMA class, each instance also keeping EMAs at `decays`, updated with it."""
    ema = tg.EMA  # the class itself, not the name this one replaces while a variant trains

    class EMAs(ema):
        def __init__(self, model, decay):
            super().__init__(model, decay)
            self.others = {d: ema(model, d) for d in decays}

        def update(self, model):
            super().update(model)
            for other in self.others.values():
                other.update(model)

    return EMAs


def train_variant(args, device, train_tokens: int, ema_decays=()) -> tuple[tg.GDNHybrid, dict, dict]:
    """train_gpt's training stage on one device: the uncompiled model holding the EMA weights, its numbers, and a
    model for each of `ema_decays` holding the EMA kept at that decay in the same run."""
    with mock.patch.object(tg, "EMA", ema_with_others(ema_decays)):  # train() builds its EMA by this name
        model, result = tg.train_model(args, device, train_tokens)
    stats = {"params": sum(p.numel() for p in model.parameters()), "steps": result["steps"],
             "train_time": result["train_time"], "tokens": result["tokens"],
             "peak_mib": torch.cuda.max_memory_allocated(device) // 2**20 if device.type == "cuda" else 0}
    others, main = {}, result["ema"]
    for decay, ema in main.others.items():
        # the decay ramps up to its bound, so equal last decays mean equal decays at every step: one average
        if ema.last_decay() == main.last_decay():
            tg.log(f"EMA {decay:g} and EMA_DECAY {main.decay:g} both ended at decay {main.last_decay():.4f} after "
                   f"{stats['steps']} steps: their rows score the same weights, quantized once")
            others[decay] = model
            continue
        others[decay] = tg.GDNHybrid(args.model_config()).to(device)
        ema.copy_to(others[decay])
    return model, stats, others


def quantized_copy(model, args, device) -> tuple[tg.GDNHybrid, int]:
    """The model as train_gpt.py ships it (calibration, GPTQ fitted to the cap, packing), reloaded from the bytes."""
    blob = tg.calibrate_and_quantize(model, args, args.model_config(), len(Path(tg.__file__).read_bytes()))
    return tg.model_from_blob(blob, device), len(blob)


def score_row(text, model, quantized, stats, args, val_tokens, luts, train_tokens) -> dict:
    """One row: the model's score and, where `quantized` is (model, bytes), the packed copy's."""
    print(f"=== trial: {text} (evaluating at {args.eval_seq_len}/{args.eval_stride})", flush=True)
    result = tg.evaluate(model, val_tokens, luts, args)
    row = {"variant": text, **stats, "tok_per_s": stats["tokens"] / max(stats["train_time"], 1e-9),
           "epochs": stats["tokens"] / train_tokens, "eval": f"{args.eval_seq_len}/{args.eval_stride}",
           "val_loss": result["val_loss"], "val_bpb": result["val_bpb"], "eval_tokens": result["tokens"],
           "eval_seconds": result["seconds"]}
    if quantized is not None:
        row["artifact_bytes"] = quantized[1]
        row["val_bpb_quant"] = tg.evaluate(quantized[0], val_tokens, luts, args)["val_bpb"]
    return row


def trial_rows(text, args, keys, cache, val_tokens, luts, device, train_tokens, quant=False,
               ema_decays=()) -> list[dict]:
    """The variant's row, then one for each of ema_decays. It trains only if no earlier variant trained its
    training settings (keys[0]), and with `quant` packs each of those models only if no earlier variant packed it
    with the same packing settings (keys[1]), so the averages compare as shipped."""
    trained, packed = cache.setdefault("trained", {}), cache.setdefault("packed", {})
    if keys[0] not in trained:
        print(f"=== trial: {text} (training)", flush=True)
        # each variant compiles afresh: a switch that recompiles every block would otherwise use up dynamo's
        # recompile limit and leave the next variants' blocks running uncompiled
        torch._dynamo.reset()
        model, stats, others = train_variant(args, device, train_tokens, ema_decays)
        trained[keys[0]] = stats, [("", model)] + [(f" [EMA {decay:g}]", other) for decay, other in others.items()]
    stats, models = trained[keys[0]]
    rows = []
    for name, m in models:
        # by model: an EMA that equals the variant's weights is the same object, packed once
        if quant and (id(m), keys[1]) not in packed:
            print(f"=== trial: {text}{name} (packing)", flush=True)
            packed[id(m), keys[1]] = quantized_copy(m, args, device)
        quantized = packed[id(m), keys[1]] if quant else None
        rows.append(score_row(text + name, m, quantized, stats, args, val_tokens, luts, train_tokens))
    return rows


def run(base_args, variants: list[str], val_tokens, luts, device, train_tokens: int, out=None,
        quant=False, ema_decays=()) -> list[dict]:
    rows, cache = [], {}
    for text in variants:
        train_over, pack_over, eval_over = parse_variant(text, quant)
        keys = json.dumps(train_over, sort_keys=True), json.dumps(pack_over, sort_keys=True)
        args = with_overrides(base_args, {**train_over, **pack_over, **eval_over})
        try:
            new = trial_rows(text, args, keys, cache, val_tokens, luts, device, train_tokens, quant, ema_decays)
        except Exception as e:  # one broken variant must not cost the others
            traceback.print_exc()
            new = [{"variant": text, "error": f"{type(e).__name__}: {e}"}]
        for row in new:
            rows.append(row)
            print(json.dumps(row), flush=True)
            if out:
                with open(out, "a", encoding="utf-8") as f:
                    print(json.dumps(row), file=f)
    return rows


def table(rows: list[dict]) -> str:
    """Markdown rows; Δ is against the first row that did not fail."""
    out = ["| variant | params | steps | tokens/s | epochs | peak MiB | eval len/stride | val_bpb | Δ vs first "
           "| after GPTQ | Δ vs first |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    ok = [r for r in rows if "error" not in r]
    first = ok[0] if ok else {}
    for r in rows:
        if "error" in r:
            out.append(f"| {r['variant']} | failed: {r['error'][:80]} | | | | | | | | | |")
            continue
        quant = "| - | - |"
        if "val_bpb_quant" in r and "val_bpb_quant" in first:
            quant = f"| {r['val_bpb_quant']:.5f} | {r['val_bpb_quant'] - first['val_bpb_quant']:+.5f} |"
        out.append(f"| {r['variant']} | {r['params']:,} | {r['steps']} | {r['tok_per_s']:,.0f} | {r['epochs']:.2f} | "
                   f"{r['peak_mib']:,} | {r['eval']} | {r['val_bpb']:.5f} | {r['val_bpb'] - first['val_bpb']:+.5f} "
                   + quant)
    return "\n".join(out)


def ema_decays(text: str) -> tuple[float, ...]:
    try:
        decays = tuple(float(d) for d in text.split(","))
    except ValueError:
        decays = ()
    if not decays or not all(0 <= d < 1 for d in decays):
        raise argparse.ArgumentTypeError(f"{text!r}: expected decays in [0, 1) separated by commas, e.g. 0,0.99,0.999")
    return decays


def main():
    cli = argparse.ArgumentParser(usage=__doc__)
    cli.add_argument("variants", nargs="+")
    cli.add_argument("--seconds", type=float, required=True, help="training seconds per variant (0: ITERATIONS)")
    cli.add_argument("--val-tokens", type=int, default=0, help="score the first N validation tokens (0: all)")
    cli.add_argument("--out", help="append one JSON line per row here")
    cli.add_argument("--quant", action="store_true", help="also score after GPTQ fitted to the cap, from the bytes")
    cli.add_argument("--ema-decays", type=ema_decays, default=(),
                     help="comma-separated decays in [0, 1): EMAs kept beside EMA_DECAY's in each run, scored too")
    opt = cli.parse_args()
    for text in opt.variants:
        parse_variant(text, opt.quant)  # fail on a typo before any training
    args = tg.Hyperparameters()
    args.max_wallclock_seconds = opt.seconds
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    tg.start_logging()
    val_tokens, luts = tg.load_eval_data(args, device)
    if opt.val_tokens:
        val_tokens = val_tokens[:opt.val_tokens + 1]
    train_tokens = tg.count_tokens(args.train_files)
    t = time.perf_counter()
    rows = run(args, opt.variants, val_tokens, luts, device, train_tokens, opt.out, opt.quant, opt.ema_decays)
    scored = [r["eval_tokens"] for r in rows if "error" not in r]
    print(f"{len(rows)} rows in {time.perf_counter() - t:.0f}s; validation tokens scored: "
          f"{scored[0] if scored else 0:,}; failed: {len(rows) - len(scored)}")
    print(table(rows))


if __name__ == "__main__":
    main()
