"""Which quantization buys the most bpb per byte? Takes the float weights a training run exported
(logs/RUN_ID_float.pt), calibrates once on self-generated sequences exactly as train_gpt.py does, then for each
row runs train_gpt's fit to the byte cap (GPTQ, packing), reloads the packed bytes and scores them with
train_gpt's own sliding-window evaluation. Prints one table: artifact bytes, total with the code, fits the
cap, val_bpb, gap to float, seconds of the fit.

    python3 scripts/bench/quant_study.py logs/RUN_ID_float.pt [--baseline-code OLD/train_gpt.py] \
        [--variant "shared k: QUANT_K_MLP=12 QUANT_K_ATTN=12 QUANT_K_GDN=12 QUANT_K_EMBED=12 EMBED_BITS=6"] \
        [--out table.md]

The first quantized row is train_gpt.py's settings as they are. Each --variant is "LABEL: KEY=VALUE ...",
overrides of train_gpt's Hyperparameters (environment variable names). --baseline-code adds a row for
another version of train_gpt.py: its own fit_artifact on the same weights and calibration statistics,
with its own size as the code. Other settings come from the same environment variables as train_gpt.py
(DATA_PATH, TOKENIZER_PATH, the model shape, CALIB_*, GPTQ_*, EVAL_*).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
import train_gpt as tg  # noqa: E402
from scripts.common import load_module, parse_variant, print_table, variant_study_options  # noqa: E402


def fitted(module, model, hessians, args, code_bytes: int, device) -> tuple[bytes, tg.GDNHybrid]:
    """A version's fit_artifact and the model rebuilt from its bytes by that version's own unpacking."""
    blob = module.fit_artifact(model, hessians, args.model_config(), code_bytes, args)
    quantized = tg.GDNHybrid(args.model_config()).to(device)
    quantized.load_state_dict(module.dequantize(module.unpack_artifact(blob)[1]))
    return blob, quantized


def study(args, state: dict, val_tokens, luts, device, variants: list[str], baseline: str | None = None) -> list[dict]:
    model = tg.GDNHybrid(args.model_config()).to(device)
    model.load_state_dict(state)
    float_bpb = tg.evaluate(model, val_tokens, luts, args)["val_bpb"]
    print(f"float val_bpb {float_bpb:.5f}", flush=True)
    hessians = tg.calibrate(model, args)
    code = len(Path(tg.__file__).read_bytes())
    rows = [dict(label="float (exported weights)", bytes=None, bpb=float_bpb, seconds=0.0)]
    jobs = [("train_gpt.py as set", tg, args, code)]
    jobs += [(label, tg, a, code) for label, a in (parse_variant(v, args) for v in variants)]
    if baseline:
        jobs.insert(0, (f"{Path(baseline).name} (baseline)", load_module(baseline, "baseline_train_gpt"), args,
                        len(Path(baseline).read_bytes())))
    for label, module, a, code_bytes in jobs:
        print(f"=== {label}", flush=True)
        t = time.perf_counter()
        blob, quantized = fitted(module, model, hessians, a, code_bytes, device)
        seconds = time.perf_counter() - t
        bpb = tg.evaluate(quantized, val_tokens, luts, a)["val_bpb"]
        rows.append(dict(label=label, bytes=len(blob), total=len(blob) + code_bytes, bpb=bpb, seconds=seconds))
        print(f"{label}: {len(blob):,} B + code {code_bytes:,}, val_bpb {bpb:.5f}, fit {seconds:.1f}s", flush=True)
    for r in rows:
        r["fits"] = r["bytes"] is not None and r["total"] <= args.artifact_cap_bytes
        r["gap"] = r["bpb"] - float_bpb
    return rows


def table(rows: list[dict]) -> str:
    out = ["| variant | artifact B | total B | fits | val_bpb | gap | fit s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        size = ("— | — | —" if r["bytes"] is None
                else f"{r['bytes']:,} | {r['total']:,} | {'yes' if r['fits'] else 'no'}")
        out.append(f"| {r['label']} | {size} | {r['bpb']:.5f} | {r['gap']:+.5f} | {r['seconds']:.1f} |")
    return "\n".join(out)


def main():
    cli = argparse.ArgumentParser(usage=__doc__)
    cli.add_argument("checkpoint")
    cli.add_argument("--baseline-code", help="another train_gpt.py whose own fit is scored on the same weights")
    args = tg.Hyperparameters()
    opt = variant_study_options(cli, args)
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    tg.start_logging()
    val_tokens, luts = tg.load_eval_data(args, device)
    state = torch.load(opt.checkpoint, map_location=device)
    print_table(table(study(args, state, val_tokens, luts, device, opt.variant, opt.baseline_code)), opt.out)


if __name__ == "__main__":
    main()
