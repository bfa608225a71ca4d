"""How small could an artifact's integer sections pack? Unpacks one artifact and packs each group's integers
(MLP, attention, GDN, embedding) again, a frame per tensor as train_gpt.py does, under other byte layouts with
train_gpt's zstd parameters, with plain zstd level 22, and with brotli-11 where the brotli package is installed;
prints each section's bytes and the order-0 entropy of its values. The scales and small tensors are left out:
every layout keeps them as they are.

    python3 scripts/bench/pack_layouts.py final_model.int6.ptz
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
import train_gpt as tg  # noqa: E402


def bit_planes(q: np.ndarray) -> bytes:
    """The values offset to 0..2^bits-1 (bits enough for the largest), one bit-packed plane per bit."""
    bits = int(np.abs(q.astype(np.int16)).max()).bit_length() + 1
    u = (q.astype(np.int16) + 2 ** (bits - 1)).astype(np.uint8).ravel()
    return b"".join(np.packbits((u >> b) & 1).tobytes() for b in range(bits))


LAYOUTS = {
    "rows in order (as packed)": lambda q: q.tobytes(),
    "columns in order (transposed)": lambda q: np.ascontiguousarray(q.T).tobytes(),
    "offset to unsigned": lambda q: (q.astype(np.int16) + 128).astype(np.uint8).tobytes(),
    "bit planes": bit_planes,
}
CODERS = {"zstd as train_gpt packs": tg.PACK_ZSTD, "zstd level 22": zstandard.ZstdCompressionParameters.from_level(22)}


def zstd_bytes(pieces: list[bytes], params) -> int:
    chunks = [p[i:i + tg.PACK_CHUNK] for p in pieces for i in range(0, len(p), tg.PACK_CHUNK)]
    with ThreadPoolExecutor() as pool:
        return sum(pool.map(lambda c: len(zstandard.ZstdCompressor(compression_params=params).compress(c)), chunks))


def entropy_bytes(qs: list[np.ndarray]) -> int:
    v = np.concatenate([q.ravel() for q in qs]).astype(np.int16) + 128
    p = np.bincount(v, minlength=256)
    p = p[p > 0] / v.size
    return int(-(p * np.log2(p)).sum() * v.size / 8)


def report(name: str, sizes: dict[str, int], seconds: float | None = None):
    took = f" ({seconds:.0f}s)" if seconds is not None else ""
    print(f"{name}: {sizes} sum {sum(sizes.values()):,}{took}", flush=True)


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    blob = Path(sys.argv[1]).read_bytes()
    _, arrays = tg.unpack_artifact(blob)
    print("as packed:", tg.artifact_section_bytes(blob), "total", len(blob))
    groups = {s: [arrays[k].numpy() for k in arrays if tg.section_of(k) == s] for s in tg.SECTIONS if s != "rest"}
    groups = {s: qs for s, qs in groups.items() if qs}
    for coder, params in CODERS.items():
        for name, layout in LAYOUTS.items():
            t = time.perf_counter()
            report(f"{coder}, {name}", {s: zstd_bytes([layout(q) for q in qs], params) for s, qs in groups.items()},
                   time.perf_counter() - t)
    try:
        import brotli
    except ImportError:
        print("brotli-11: not installed (pip install brotli)")
    else:
        t = time.perf_counter()
        report("brotli-11 rows in order", {s: len(brotli.compress(b"".join(q.tobytes() for q in qs), quality=11,
                                                                  lgwin=24)) for s, qs in groups.items()},
               time.perf_counter() - t)
    report("order-0 entropy bytes", {s: entropy_bytes(qs) for s, qs in groups.items()})


if __name__ == "__main__":
    main()
