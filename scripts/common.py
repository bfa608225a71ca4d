"""Where each number sits in a log: one pattern per field (the last match wins), shared by every script
that reads train_gpt.py's logs or the challenge baseline's."""

from __future__ import annotations

import re

OURS = {"code_sha256": r"code_sha256:([0-9a-f]{64})", "code_bytes": r"code_bytes:(\d+)",
        "steps": r"stopping: .* after (\d+) steps", "train_time": r"stopping: .*train_time:([\d.]+)s",
        "tokens": r"stopping: .*tokens:([\d,]+)", "tok_s": r"tok/s:([\d,]+)\s*$", "epochs": r"epochs:([\d.]+)",
        "peak_mib": r"peak_memory:(\d+)", "pre_bpb": r"pre_quant_ema .*val_bpb:([\d.]+)",
        "val_loss": r"final_quantized_zstd22_roundtrip val_loss:([\d.]+)",
        "val_bpb": r"final_quantized_zstd22_roundtrip .*val_bpb:([\d.]+)",
        "eval_s": r"final_quantized_zstd22_roundtrip .*eval_time:([\d.]+)s", "gap": r"quant_gap_bpb:([-+\d.]+)",
        "artifact_bytes": r"artifact:\S+ bytes:(\d+)", "bytes_total": r"bytes_total:(\d+)",
        "byte_proof": r"^byte_proof: .* (match)$"}
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
