"""Times train_gpt.py's relu2_matmul_kernel alone at the training shape for a list of tile configurations
(BM x BN x BK, warps, stages; each a new compile), in both directions the MLP uses it, against cuBLAS doing the
same product without the epilogue, and prints one table (ms per call, TFLOP/s; the configurations that
train_gpt's autotune list holds are marked).

    python3 scripts/tune_relu2.py [--shape 48x2048] [--dim 512] [--mult 3] [--steps 50]

forward:  r = relu(x @ fc^T)^2            x [tokens, d],   fc [mult d, d]
backward: dh = (g @ proj) * 2 sqrt(r)     g [tokens, d],   proj [d, mult d]
Configurations that do not fit in shared memory fail to launch and are listed as such.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from bench_relu2 import mlp_shape_cli
from bench_step import cuda_ms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train_gpt as tg  # noqa: E402

CONFIGS = [(bm, bn, bk, w, s) for bm, bn, bk in ((128, 128, 64), (128, 256, 64), (256, 128, 64), (128, 128, 32),
                                                 (128, 256, 32), (128, 128, 128), (64, 256, 64), (256, 256, 64))
           for w, s in ((4, 4), (8, 3), (8, 4))]


def launcher(a, b, r, out, backward, cfg):
    bm, bn, bk, w, s = cfg
    grid = (tg.triton.cdiv(a.size(0), bm) * tg.triton.cdiv(b.size(1), bn),)
    return lambda: tg.relu2_matmul_kernel.fn[grid](a, b, r, out, a.size(0), b.size(1), a.size(1), *a.stride(),
                                                   *b.stride(), BACKWARD=backward, BM=bm, BN=bn, BK=bk,
                                                   num_warps=w, num_stages=s)


def in_autotune_list(cfg):
    bm, bn, bk, w, s = cfg
    return any(c.kwargs == {"BM": bm, "BN": bn, "BK": bk} and c.num_warps == w and c.num_stages == s
               for c in tg.relu2_matmul_kernel.configs)


def main():
    opt = mlp_shape_cli().parse_args()
    B, T = map(int, opt.shape.split("x"))
    M, d, h = B * T, opt.dim, opt.mult * opt.dim
    gen = torch.Generator(device="cuda").manual_seed(0)
    x, g = (torch.randn(M, d, device="cuda", generator=gen).bfloat16() for _ in range(2))
    fc = (torch.randn(h, d, device="cuda", generator=gen) * d ** -0.5).bfloat16()
    proj = (torch.randn(d, h, device="cuda", generator=gen) * h ** -0.5).bfloat16()
    r = torch.relu(x @ fc.t()).square()
    out = torch.empty_like(r)
    flop = 2 * M * d * h
    directions = {"forward": (x, fc.t(), r, False, lambda: x @ fc.t()),
                  "backward": (g, proj, r, True, lambda: g @ proj)}
    rows = []
    for name, (a, b, rr, backward, cublas) in directions.items():
        want = torch.relu(a @ b).square() if not backward else (a @ b) * 2 * rr.sqrt()
        cublas()
        rows.append((name, "cuBLAS a @ b (no epilogue)", cuda_ms(cublas, opt.steps), None))
        for cfg in CONFIGS:
            label = "BM%d BN%d BK%d w%d s%d" % cfg + (" *" if in_autotune_list(cfg) else "")
            run = launcher(a, b, rr, out, backward, cfg)
            try:
                run()
                torch.cuda.synchronize()
            except Exception as e:  # too much shared memory, or a compile error: listed, not timed
                rows.append((name, label, None, type(e).__name__))
                continue
            err = ((out.float() - want.float()).norm() / want.float().norm()).item()
            rows.append((name, label, cuda_ms(run, opt.steps), err))
            print(f"{name} {label}: {rows[-1][2]:.3f} ms", flush=True)
    print(f"\nshape {opt.shape}, {M} x {d} @ {d} x {h}, {flop / 1e9:.0f} GFLOP per call; * = in train_gpt's autotune list")
    print(f"{'direction':<10}{'configuration':<30}{'ms':>8}{'TFLOP/s':>9}  rel. error")
    for name, label, ms, err in rows:
        if ms is None:
            print(f"{name:<10}{label:<30}{'-':>8}{'-':>9}  failed: {err}")
        else:
            print(f"{name:<10}{label:<30}{ms:>8.3f}{flop / ms / 1e9:>9.0f}  {'' if err is None else f'{err:.1e}'}")


if __name__ == "__main__":
    main()
