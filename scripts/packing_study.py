"""Is it worth bit-packing the quantized values? Re-packs an artifact's integer arrays two ways and
compresses each with zstd-22: one value per byte (what train_gpt.py writes) and the values bit-packed
at the width their range needs (6 bits for int6, 5 for int5, ...). Prints both sizes.

    python3 scripts/packing_study.py final_model.int6.ptz [more.ptz ...]
    python3 scripts/packing_study.py --gaussian 4,5 [--gaussian 6,6 ...]

--gaussian MLP,OTHER packs Gaussian weights of the default model's shapes, rounded to nearest at those
bits by train_gpt's quantize_model (embedding int8, small tensors fp16), with train_gpt.pack_artifact:
on the proxy their sizes came within 0.5% of the real GPTQ artifacts, so this measures the format
without a trained model.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train_gpt as tg  # noqa: E402


def width(q: np.ndarray) -> int:
    """Bits of the symmetric signed range that holds q: int6 values lie in [-31, 31]."""
    return int(np.abs(q.astype(np.int32)).max(initial=0)).bit_length() + 1


def bit_pack(q: np.ndarray, bits: int) -> bytes:
    """Offset to unsigned, then each value's low `bits` bits, most significant first, end to end."""
    u = (q.astype(np.int32).ravel() + (1 << (bits - 1))).astype(np.uint32)
    planes = (u[:, None] >> np.arange(bits - 1, -1, -1, dtype=np.uint32)) & 1
    return np.packbits(planes.astype(np.uint8).ravel()).tobytes()


def study(path: str) -> dict:
    blob = Path(path).read_bytes()
    _, arrays = tg.unpack_artifact(blob)
    per_byte, packed, rest, widths = [], [], [], {}
    for key, t in arrays.items():
        a = t.numpy()
        if key.endswith(":q"):
            b = width(a)
            widths[b] = widths.get(b, 0) + a.size
            per_byte.append(a.tobytes())
            packed.append(bit_pack(a, b))
        else:
            rest.append(a.tobytes())
    z = zstandard.ZstdCompressor(level=22)
    tail = b"".join(rest)
    return {"artifact": len(blob), "widths": widths,
            "per_byte": len(z.compress(b"".join(per_byte) + tail)),
            "bit_packed": len(z.compress(b"".join(packed) + tail))}


def gaussian_artifact(bits: tuple[int, int], folder: str) -> str:
    """Every weight drawn from N(0, 1), then train_gpt's own quantize_model; identity input statistics
    make its GPTQ round to nearest."""
    args = tg.Hyperparameters()
    torch.manual_seed(0)
    model = tg.GDNHybrid(args.model_config())
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    identity = {n + ".weight": torch.eye(m.in_features) for n, m in model.named_modules()
                if isinstance(m, tg.CastedLinear) and tg.is_matrix(n + ".weight", m.weight)}
    path = Path(folder) / f"gaussian_mlp{bits[0]}_other{bits[1]}.ptz"
    path.write_bytes(tg.pack_artifact(model.cfg, tg.quantize_model(model, identity, bits, args)))
    return str(path)


def main(paths):
    print(f"{'artifact':<32}{'file B':>12}{'per-byte+zstd':>15}{'bit-packed+zstd':>17}{'packed-byte':>13}  widths")
    for p in paths:
        r = study(p)
        widths = " ".join(f"int{b}:{n:,}" for b, n in sorted(r["widths"].items()))
        print(f"{Path(p).name[-32:]:<32}{r['artifact']:>12,}{r['per_byte']:>15,}{r['bit_packed']:>17,}"
              f"{r['bit_packed'] - r['per_byte']:>+13,}  {widths}")


if __name__ == "__main__":
    cli = argparse.ArgumentParser(usage=__doc__)
    cli.add_argument("artifacts", nargs="*")
    cli.add_argument("--gaussian", action="append", default=[], help="MLP,OTHER bits, e.g. 4,5")
    opt = cli.parse_args()
    if not opt.artifacts and not opt.gaussian:
        sys.exit(__doc__)
    with tempfile.TemporaryDirectory() as tmp:
        main(opt.artifacts + [gaussian_artifact(tuple(map(int, g.split(","))), tmp) for g in opt.gaussian])
