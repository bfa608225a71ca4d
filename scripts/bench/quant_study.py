"""Which quantization buys the most bpb per byte? Takes the float EMA weights a training run saved
(logs/RUN_ID_ema.pt), calibrates on self-generated sequences exactly as train_gpt.py does, then for each
variant quantizes, packs (zstd-22), unpacks and scores the result with train_gpt's own sliding-window
evaluation. Prints one table: artifact bytes, total with the code, fits the cap, val_bpb, gap to float.

    python3 scripts/quant_study.py logs/RUN_ID_ema.pt [--embed] [--out table.md]

Settings come from the same environment variables as train_gpt.py (DATA_PATH, TOKENIZER_PATH, the model
shape, CALIB_*, GPTQ_*, EVAL_*). The variants are in variants(); the embedding is int8 (as train_gpt.py
writes it) unless a row says otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train_gpt as tg  # noqa: E402

EMBED = "embed.weight"


def variants(embed: bool) -> list[dict]:
    """GPTQ as train_gpt.py runs it at every rung, and round to nearest at MLP int4 / rest int5; with
    `embed`, also that rung with the tied embedding at int6 and fp16."""
    rows = [dict(label=f"gptq {m}/{o}", bits=(m, o)) for m, o in tg.QUANT_LADDER]
    rows.append(dict(label="rtn 4/5", bits=(4, 5), gptq=False))
    if embed:
        rows += [dict(label=f"gptq 4/5, embed {'fp16' if e == 16 else f'int{e}'}", bits=(4, 5), embed_bits=e)
                 for e in (6, 16)]
    return rows


def quantize_variant(model, hessians, args, bits, gptq=True, embed_bits=8) -> dict:
    """train_gpt's quantize_model at these bits; the embedding at embed_bits (16 = fp16)."""
    if not gptq:  # identity input statistics make GPTQ round to nearest
        hessians = {k: torch.eye(h.size(0), device=h.device, dtype=h.dtype) for k, h in hessians.items()}
    arrays = tg.quantize_model(model, hessians, bits, args)
    weight = model.state_dict()[EMBED].detach().float()
    for key in [k for k in arrays if k.startswith(EMBED + ":")]:
        del arrays[key]
    if embed_bits == 16:
        arrays[EMBED + ":f"] = weight.half().cpu()
    else:
        q, s = tg.quantize_rtn(weight, embed_bits)
        arrays[EMBED + ":q"], arrays[EMBED + ":s"] = q.cpu(), s.cpu()
    return arrays


def study(args, state: dict, val_tokens, luts, device, code_bytes: int, embed: bool) -> list[dict]:
    config = args.model_config()
    model = tg.GDNHybrid(config).to(device)
    model.load_state_dict(state)
    float_bpb = tg.evaluate(model, val_tokens, luts, args, device, args.eval_stride)["val_bpb"]
    print(f"float (EMA) val_bpb {float_bpb:.5f}", flush=True)
    t = time.perf_counter()
    calib = tg.generate_calibration(model, args.calib_seqs, args.calib_len, args.calib_temperature, args.seed, device)
    hessians = tg.collect_hessians(model, calib, args.eval_batch_seqs)
    print(f"calibration {args.calib_seqs} x {args.calib_len} tokens: {time.perf_counter() - t:.1f}s", flush=True)
    rows = [{"label": "float (EMA weights)", "bytes": None, "bpb": float_bpb}]
    for v in variants(embed):
        label = v.pop("label")
        blob = tg.pack_artifact(config, quantize_variant(model, hessians, args, **v))
        _, arrays = tg.unpack_artifact(blob)
        quantized = tg.GDNHybrid(config).to(device)
        quantized.load_state_dict(tg.dequantize(arrays))
        bpb = tg.evaluate(quantized, val_tokens, luts, args, device, args.eval_stride)["val_bpb"]
        rows.append({"label": label, "bytes": len(blob), "bpb": bpb})
        print(f"{label}: {len(blob):,} B, val_bpb {bpb:.5f}", flush=True)
    for r in rows:
        r["total"] = None if r["bytes"] is None else r["bytes"] + code_bytes
        r["fits"] = r["total"] is not None and r["total"] <= args.artifact_cap_bytes
        r["gap"] = r["bpb"] - float_bpb
    return rows


def table(rows: list[dict], code_bytes: int) -> str:
    out = [f"code bytes: {code_bytes:,}", "", "| variant | artifact B | total B | fits | val_bpb | gap |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        size = ("— | — | —" if r["bytes"] is None
                else f"{r['bytes']:,} | {r['total']:,} | {'yes' if r['fits'] else 'no'}")
        out.append(f"| {r['label']} | {size} | {r['bpb']:.5f} | {r['gap']:+.5f} |")
    return "\n".join(out)


def main():
    cli = argparse.ArgumentParser(usage=__doc__)
    cli.add_argument("checkpoint")
    cli.add_argument("--out")
    cli.add_argument("--embed", action="store_true", help="also the embedding at int6 and fp16")
    opt = cli.parse_args()
    args = tg.Hyperparameters()
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    sp = tg.load_tokenizer(args)
    val_tokens = tg.load_val_tokens(args.val_files, args.vocab_size)
    luts = tg.build_sentencepiece_luts(sp, args.vocab_size, device)
    state = torch.load(opt.checkpoint, map_location=device)
    code_bytes = len(Path(tg.__file__).read_bytes())
    text = table(study(args, state, val_tokens, luts, device, code_bytes, opt.embed), code_bytes)
    print(text)
    if opt.out:
        Path(opt.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
