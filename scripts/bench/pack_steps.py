"""Does the packed size follow the step? The fit to the cap aims by the bytes, so they must fall steadily as
the steps grow. Builds train_gpt's model at its configured size with synthetic weights (rows and columns of
unequal spread, as trained weights have), rounds every projection to nearest at train_gpt's steps (one per
tensor) for scales 0.16% apart, and prints the frames' bytes under three packers: zstd level 22 in 4 MiB frames
across tensors, level 22 in a frame per tensor, and train_gpt's own packing. Then runs train_gpt's fit to the
cap on the same weights and prints its tries. Runs on a CPU (no Hessians: rounding to nearest, not GPTQ).

    python3 scripts/bench/pack_steps.py [--scales 0.6731,0.6742,0.6752,0.6763,0.6774]
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
import train_gpt as tg  # noqa: E402

LEVEL22 = zstandard.ZstdCompressionParameters.from_level(22)


def synthetic_model(args) -> tg.GDNHybrid:
    model = tg.GDNHybrid(args.model_config())
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                rows = torch.exp(0.4 * torch.randn(p.shape[0], 1, generator=gen))
                cols = 1 + 0.3 * torch.randn(1, p.shape[1], generator=gen).abs()
                p.copy_(0.02 * torch.randn(p.shape, generator=gen) * rows * cols)
    return model


def rounding_plan(model) -> dict[str, tuple]:
    """quant_plan's layout without Hessians: every projection and the embedding rounded to nearest."""
    plan = {}
    for name, p in model.state_dict().items():
        p = p.detach().float()
        plan[name] = (tg.weight_group(name) if tg.is_matrix(name, p) or name == "embed.weight" else None, p, None)
    return plan


def frames_bytes(arrays: dict, params, per_tensor: bool) -> int:
    """The zstd frames' bytes: train_gpt's frames (a frame per integer tensor), or one body per section."""
    order = sorted(arrays, key=lambda k: tg.SECTIONS.index(tg.section_of(k)))
    if per_tensor:
        jobs = [body for _, body in tg.pack_jobs(order, {k: t.contiguous() for k, t in arrays.items()})]
    else:
        jobs = []
        for section in tg.SECTIONS:
            body = b"".join(arrays[k].contiguous().numpy().tobytes() for k in order if tg.section_of(k) == section)
            jobs += [body[i:i + tg.PACK_CHUNK] for i in range(0, len(body), tg.PACK_CHUNK)]
    with ThreadPoolExecutor() as pool:
        return sum(pool.map(lambda b: len(zstandard.ZstdCompressor(compression_params=params).compress(b)), jobs))


def main():
    cli = argparse.ArgumentParser(usage=__doc__)
    cli.add_argument("--scales", default="0.6731,0.6742,0.6752,0.6763,0.6774")
    opt = cli.parse_args()
    tg.start_logging()  # the fit's tries
    args = tg.Hyperparameters()
    model = synthetic_model(args)
    plan = rounding_plan(model)
    packers = {"level 22, 4 MiB frames": (LEVEL22, False), "level 22, frame per tensor": (LEVEL22, True),
               "as packed (min match 6, frame per tensor)": (tg.PACK_ZSTD, True)}
    print("| scale | " + " | ".join(packers) + " |\n|---|" + "---|" * len(packers), flush=True)
    for scale in (float(s) for s in opt.scales.split(",")):
        arrays = tg.quantize_model(plan, scale, args)
        cells = [f"{frames_bytes(arrays, *p):,}" for p in packers.values()]
        print(f"| {scale:.4f} | " + " | ".join(cells) + " |", flush=True)
    tg.quant_plan = lambda *_: plan  # the fit as train_gpt runs it, on the rounding plan
    t = time.perf_counter()
    blob = tg.fit_artifact(model, {}, model.cfg, len(Path(tg.__file__).read_bytes()), args)
    print(f"fit: {len(blob):,} B artifact in {time.perf_counter() - t:.1f}s")


if __name__ == "__main__":
    main()
