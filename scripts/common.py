"""What the scripts share, and the only module besides train_gpt.py that scripts and records/make_record.py
import: where each number sits in a log (train_gpt.py's and the challenge baseline's), the --code option and
loading a version of train_gpt.py as a module, a copy of its settings with overrides (and "LABEL: KEY=VALUE"
variants), timing CUDA work, and the Gated DeltaNet recurrence in float64 (the reference of
scripts/bench/check_fla.py and of the tests).
torch is imported only where it is used, so the log readers run without it.

A script imports it after putting the repository root on sys.path (which train_gpt.py needs too):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from scripts.common import fields
"""

from __future__ import annotations

import copy
import importlib.util
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------- log fields: one pattern each, the last match wins

# pre_quant_ema: the older records' name for pre_quant
OURS = {"code_sha256": r"code_sha256:([0-9a-f]{64})", "code_bytes": r"code_bytes:(\d+)",
        "steps": r"stopping: .* after (\d+) steps", "train_time": r"stopping: .*train_time:([\d.]+)s",
        "tokens": r"stopping: .*tokens:([\d,]+)", "tok_s": r"tok/s:([\d,]+)\s*$", "epochs": r"epochs:([\d.]+)",
        "peak_mib": r"peak_memory:(\d+)", "pre_bpb": r"pre_quant(?:_ema)? .*val_bpb:([\d.]+)",
        # the run's score: the packed file's after score-first adaptation where the run adapted, else without
        "val_loss": r"final_(?:quantized_zstd22_roundtrip|score_first_ttt) val_loss:([\d.]+)",
        "val_bpb": r"final_(?:quantized_zstd22_roundtrip|score_first_ttt) .*val_bpb:([\d.]+)",
        "eval_s": r"final_(?:quantized_zstd22_roundtrip|score_first_ttt) .*eval_time:([\d.]+)s",
        "fixed_bpb": r"final_quantized_zstd22_roundtrip .*val_bpb:([\d.]+)", "gap": r"quant_gap_bpb:([-+\d.]+)",
        "artifact_bytes": r"artifact:\S+ bytes:(\d+)", "bytes_total": r"bytes_total:(\d+)",
        "byte_proof": r"^byte_proof: .* (match)$", "after_s": r"time_budget: .*after_training:([\d.]+)s"}
BASELINE = {"steps": r"stopping_early: .* step:(\d+)/", "train_ms": r"stopping_early: wallclock_cap train_time:(\d+)ms",
            "batch_tokens": r"train_batch_tokens:(\d+)", "pre_bpb": r"^step:\d+/\d+ val_loss:\S+ val_bpb:([\d.]+)",
            "val_loss": r"final_int8_zlib_roundtrip_exact val_loss:([\d.]+)",
            "val_bpb": r"final_int8_zlib_roundtrip_exact .*val_bpb:([\d.]+)",
            "artifact_bytes": r"Serialized model int8\+zlib: (\d+) bytes",
            "ours_metric_bpb": r"baseline_ours_metric .*val_bpb:([\d.]+)",
            "disjoint_loss": r"baseline_ours_metric seq_len:(\d+) stride:\1 val_loss:([\d.]+)"}


def find(pattern: str, text: str) -> str | None:
    """The last match's last group, or None."""
    found = re.findall(pattern, text, flags=re.M)
    if not found:
        return None
    return found[-1][-1] if isinstance(found[-1], tuple) else found[-1]


def fields(text: str, patterns: dict = OURS) -> dict[str, str | None]:
    return {key: find(pattern, text) for key, pattern in patterns.items()}

# ---------------------------------------------------------------- modules and timing


def with_overrides(args, overrides: dict):
    """A copy of train_gpt's Hyperparameters with settings (attribute names) replaced, each cast to its type."""
    out = copy.copy(args)
    for key, value in overrides.items():
        setattr(out, key, type(getattr(args, key))(value))
    return out


def parse_variant(text: str, args) -> tuple[str, object]:
    """"LABEL: KEY=VALUE ..." (KEY a train_gpt setting's environment variable) as (label, a copy of args with them)."""
    label, sep, items = text.partition(":")
    overrides = {}
    for item in items.split() if sep and items.strip() else ["?"]:
        key, eq, value = item.partition("=")
        if not eq or not hasattr(args, key.lower()):
            raise SystemExit(f"--variant {text!r}: expected 'LABEL: KEY=VALUE ...' with KEY a train_gpt setting")
        overrides[key.lower()] = value
    return label.strip(), with_overrides(args, overrides)


def variant_study_options(cli, args) -> object:
    """A study's options with its repeatable --variant "LABEL: KEY=VALUE ..." and --out (the table's file), every
    variant checked against args' settings before any work."""
    cli.add_argument("--variant", action="append", default=[], help="'LABEL: KEY=VALUE ...' (repeatable)")
    cli.add_argument("--out", help="also write the table here")
    opt = cli.parse_args()
    for v in opt.variant:
        parse_variant(v, args)
    return opt


def print_table(text: str, out: str | None):
    print(text)
    if out:
        Path(out).write_text(text + "\n")


def code_option(cli, help: str = "comma-separated versions of train_gpt.py, side by side"):
    """--code: which train_gpt.py versions a script loads; by default this repository's, from any folder."""
    cli.add_argument("--code", default=str(ROOT / "train_gpt.py"), help=help)


def load_module(path: str, name: str):
    """A script loaded as module `name` (bench_step.py loads versions of train_gpt.py with it)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # torch.compile looks the module up by name
    spec.loader.exec_module(module)
    return module


def cuda_ms(fn, n):
    """GPU milliseconds per call of fn, over n calls."""
    import torch
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(n):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / n


def turn_order(rnd: int, n: int) -> list[int]:
    """The order in which n versions are timed in round rnd: reversed every other round, so that a drifting machine
    favours none of them."""
    return list(range(n)) if rnd % 2 == 0 else list(reversed(range(n)))


def paired_summary(times: list[list[float]]) -> list[tuple[float, float, float, int]]:
    """Per version (ms of each round): median, minimum, median difference to the first version within a round,
    and the rounds in which it was faster than the first."""
    first = times[0]
    return [(statistics.median(t), min(t), statistics.median(a - b for a, b in zip(t, first)),
             sum(a < b for a, b in zip(t, first))) for t in times]


# ---------------------------------------------------------------- references


def recurrence_fp64(q, k, v, g, beta, scale):
    """The Gated DeltaNet recurrence one token at a time, in float64."""
    import torch
    q, k, v, g, beta = (t.double() for t in (q, k, v, g, beta))
    B, T, H, K = q.shape
    S, out = torch.zeros(B, H, K, v.size(-1), dtype=torch.float64, device=q.device), []
    for t in range(T):
        S = S * g[:, t].exp()[..., None, None]
        delta = beta[:, t, :, None] * (v[:, t] - torch.einsum("bhk,bhkv->bhv", k[:, t], S))
        S = S + k[:, t, :, :, None] * delta[:, :, None, :]
        out.append(scale * torch.einsum("bhk,bhkv->bhv", q[:, t], S))
    return torch.stack(out, 1)
