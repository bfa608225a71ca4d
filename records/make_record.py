"""Turns the logs of one or more train_gpt.py runs (one per seed) into a challenge-style record folder.

  python records/make_record.py logs/seed*.txt --out records/track_10min_16mb/2026-11-24_GDNHybrid \
      --name "GDN-Hybrid" --author "..." --github-id "..." --blurb "..." [--reference-val-loss 2.0727]

The folder gets README.md, submission.json, the logs, and the exact train_gpt.py and requirements.txt.
Refused (exit 1, nothing written): logs of different code (code_sha256), code that differs from the
train_gpt.py being copied, a run whose artifact is over the cap or that never declared a result, a log
without the passing exact-byte proof, a run over the challenge's 600 s of training or 600 s after it (its
`time_budget:` line: calibration, GPTQ, packing and every score). With several seeds it reports mean,
standard deviation and the one-sided t-test the challenge asks for: is the mean val_loss at least
--min-gain-nats (0.005) below the reference? (p < 0.01 to claim a record.)
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import shutil
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from scripts.common import fields  # noqa: E402

CAP = 16_000_000
TIME_LIMIT_S = 600  # of training, and of what follows it
KEYS = ("code_sha256", "code_bytes", "steps", "train_time", "after_s", "pre_bpb", "val_loss", "val_bpb",
        "bytes_total", "artifact_bytes")


class Refused(ValueError):
    pass


def parse_log(path: Path) -> dict:
    text = path.read_text(encoding="utf-8", errors="replace")
    found = fields(text)
    run = {"log": path.name, **{key: found[key] for key in KEYS}}
    if "ArtifactTooLarge" in text or (run["bytes_total"] and int(run["bytes_total"]) > CAP):
        raise Refused(f"{path}: the artifact is over the {CAP:,}-byte cap")
    if not found["byte_proof"]:
        raise Refused(f"{path}: no passing 'byte_proof: ... match' line; the byte count is unproven")
    missing = [k for k in ("code_sha256", "val_loss", "val_bpb", "bytes_total") if run[k] is None]
    if missing:
        raise Refused(f"{path}: no {', '.join(missing)}: the run did not finish with a scored artifact")
    if run["after_s"] is None:
        raise Refused(f"{path}: no 'time_budget:' line: the run's seconds after training are unknown")
    over = [f"{what} took {s}s" for what, s in (("training", run["train_time"]), ("what followed it", run["after_s"]))
            if float(s) > TIME_LIMIT_S]
    if over:
        raise Refused(f"{path}: {' and '.join(over)}, over the challenge's {TIME_LIMIT_S} s")
    return run


def check_same_code(runs: list[dict], code: bytes):
    hashes = {r["code_sha256"] for r in runs}
    if len(hashes) > 1:
        raise Refused("the logs come from different train_gpt.py versions: "
                      + ", ".join(f"{r['log']}={r['code_sha256'][:12]}" for r in runs))
    if hashes != {hashlib.sha256(code).hexdigest()}:
        raise Refused("the logs were not produced by the train_gpt.py being copied (code_sha256 differs)")


def student_t_sf(t: float, df: int) -> float:
    """P(T > t) for Student's t with df degrees of freedom, via the regularized incomplete beta."""
    x = df / (df + t * t)
    tail = 0.5 * betainc(df / 2, 0.5, x)
    return tail if t > 0 else 1 - tail


def betainc(a: float, b: float, x: float) -> float:
    if x <= 0 or x >= 1:
        return float(x >= 1)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x > (a + 1) / (a + b + 2):
        return 1 - betainc(b, a, 1 - x)
    c, d = 1.0, 1 - (a + b) * x / (a + 1)  # Lentz's continued fraction
    d = f = 1 / (d if abs(d) > 1e-300 else 1e-300)
    for m in range(1, 300):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1 + num * d
            d = 1 / (d if abs(d) > 1e-300 else 1e-300)
            c = 1 + num / c
            c = c if abs(c) > 1e-300 else 1e-300
            f *= c * d
        if abs(c * d - 1) < 1e-14:
            break
    return front * f / a


def significance(losses: list[float], reference: float, min_gain: float) -> dict:
    n, mean = len(losses), statistics.fmean(losses)
    if n < 2:
        return {"n": n, "mean": mean, "std": None, "t": None, "p_value": None}
    std = statistics.stdev(losses)
    t = (reference - min_gain - mean) / (std / math.sqrt(n)) if std > 0 else math.inf
    return {"n": n, "mean": mean, "std": std, "t": t, "p_value": student_t_sf(t, n - 1) if std > 0 else 0.0}


def readme(opt, runs, stats, bpb_mean, bpb_std) -> str:
    rows = "\n".join(f"| {r['log']} | {r['steps']} | {r['train_time']} | {r['after_s']} | {r['pre_bpb']} | "
                     f"{r['val_loss']} | {r['val_bpb']} | {r['artifact_bytes']} | {r['code_bytes']} | "
                     f"{r['bytes_total']} |" for r in runs)
    spread = f" ± {bpb_std:.5f} (sample std)" if bpb_std is not None else " (one run)"
    test = ("no significance test: one run" if stats["p_value"] is None else
            f"one-sided t-test that val_loss is at least {opt.min_gain_nats} nats below the reference "
            f"{opt.reference_val_loss}: t = {stats['t']:.3f}, p = {stats['p_value']:.4g} (n = {stats['n']})")
    return f"""# {opt.name}

{opt.blurb}

{opt.data_note}

Mean val_bpb {bpb_mean:.5f}{spread} over {len(runs)} run(s); {test if opt.reference_val_loss else "no reference given"}.

| log | steps | train s | after-training s | pre-quant bpb | val_loss | val_bpb | artifact bytes | code bytes | total bytes |
|---|---|---|---|---|---|---|---|---|---|
{rows}

Reproduce: `torchrun --standalone --nproc_per_node=8 train_gpt.py` with the official data (see the
repository README); every log above passed the exact-byte proof and the {CAP:,}-byte cap, and kept to
{TIME_LIMIT_S} s of training and {TIME_LIMIT_S} s after it ("after-training s": calibration on the model's own text,
GPTQ, packing and every score).
"""


def make_record(opt) -> Path:
    code = (ROOT / "train_gpt.py").read_bytes()
    runs = [parse_log(Path(p)) for p in opt.logs]
    check_same_code(runs, code)
    out = Path(opt.out)
    if out.exists() and any(out.iterdir()):
        raise Refused(f"{out} exists and is not empty")
    losses, bpbs = [float(r["val_loss"]) for r in runs], [float(r["val_bpb"]) for r in runs]
    stats = significance(losses, opt.reference_val_loss or 0.0, opt.min_gain_nats)
    bpb_std = statistics.stdev(bpbs) if len(bpbs) > 1 else None
    out.mkdir(parents=True, exist_ok=True)
    for p in opt.logs:
        shutil.copy(p, out / Path(p).name)
    shutil.copy(ROOT / "train_gpt.py", out / "train_gpt.py")
    shutil.copy(ROOT / "requirements.txt", out / "requirements.txt")
    submission = {"author": opt.author, "github_id": opt.github_id, "name": opt.name, "blurb": opt.blurb,
                  "date": opt.date, "val_loss": round(stats["mean"], 8), "val_bpb": round(statistics.fmean(bpbs), 8),
                  "bytes_total": max(int(r["bytes_total"]) for r in runs), "bytes_code": len(code)}
    if opt.reference_val_loss and stats["p_value"] is not None:
        submission.update(val_loss_std=stats["std"], p_value=stats["p_value"], seeds=len(runs))
    (out / "submission.json").write_text(json.dumps(submission, indent=2) + "\n")
    (out / "README.md").write_text(readme(opt, runs, stats, submission["val_bpb"], bpb_std))
    return out


def main(argv=None):
    cli = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cli.add_argument("logs", nargs="+")
    cli.add_argument("--out", required=True)
    cli.add_argument("--name", required=True)
    cli.add_argument("--author", required=True)
    cli.add_argument("--github-id", required=True)
    cli.add_argument("--blurb", required=True)
    cli.add_argument("--data-note", default="Data: the official FineWeb SP1024 export.",
                     help="say 'proxy shards, not FineWeb' for proxy runs")
    cli.add_argument("--date", default=datetime.date.today().isoformat())
    cli.add_argument("--reference-val-loss", type=float, default=None)
    cli.add_argument("--min-gain-nats", type=float, default=0.005)
    opt = cli.parse_args(argv)
    try:
        out = make_record(opt)
    except Refused as e:
        print(f"refused: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
