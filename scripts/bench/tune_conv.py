"""Times train_gpt.py's three Triton conv kernels alone at the training shape, for several tile lengths
(BT) and warp counts (each a new compile, for q, k and v apiece), and prints one table (GPU ms per call,
and per step of ten GDN layers).

    python3 scripts/bench/tune_conv.py [--shape 48x2048] [--bt 16,32] [--warps 2,4]
    python3 scripts/bench/tune_conv.py --code train_gpt.py,.prev/train_gpt.py [--rounds 6]

Each kernel is launched on the same inputs as ConvQKV gives it (x = [q | k | v] projections, bf16, with
a BOS about every 700 tokens); ConvQKV's own launch (BT = ConvQKV.BT; 4 warps, 2 for conv_bwd) is
marked. Memory traffic floor: reading and writing each [B, T, 3d] bf16 tensor once, at 3.35 TB/s.
--code instead times whole versions of ConvQKV (forward and backward through autograd, the weight-gradient
partials' sum included) from each listed train_gpt.py, in turns: --rounds rounds of 30 calls, after checking that
their gradients agree. It prints each round, each version's median, its ratio to the first, and in how many rounds
it was faster.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
import train_gpt as tg  # noqa: E402
from scripts.common import cuda_ms, load_module, paired_summary, turn_order  # noqa: E402

H100_TBPS = 3.35


def inputs(B, T, d, K, device):
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(B, T, 3 * d, device=device, generator=gen).bfloat16()
    w = torch.randn(3 * d, K, device=device, generator=gen) * 0.5
    doc = (torch.rand(B, T, device=device, generator=gen) < 1 / 700).int().cumsum(1).int()
    g = torch.randn(B, T, d, device=device, generator=gen).bfloat16()
    return x, w, doc, g


def launches(x, w, doc, g, heads, BT):
    """The three kernels as ConvQKV launches them (q, k and v parts each), as functions of the warp count,
    and the buffers they write. Run in order they compute what ConvQKV does with g as every part's gradient:
    tests/test_model.py checks that against ConvQKV, so this copy of its launches cannot drift unseen."""
    (B, T, C), K = x.shape, w.size(1)
    D, grid = C // (3 * heads), (B, -(-T // BT), heads)
    out, da, dx = torch.empty_like(g), torch.empty_like(x), torch.empty_like(x)
    dw_parts = x.new_empty(B * grid[1], C, K, dtype=torch.float32)

    def each_part(kernel, *a):
        return lambda nw: [kernel[grid](*a, T, C, heads, part, K, BT, D, num_warps=nw) for part in range(3)]
    return {
        "conv_qkv_fwd": each_part(tg.conv_qkv_fwd_kernel, x, w, doc, out),
        "conv_qkv_bwd": each_part(tg.conv_qkv_bwd_kernel, x, w, doc, g, da),
        "conv_bwd": lambda nw: tg.conv_bwd_kernel[(B, grid[1], 3 * heads)](da, x, w, doc, dx, dw_parts, T, C, K, BT, D,
                                                                           num_warps=nw),
    }, {"v": out, "dx": dx, "dweight": dw_parts}


def conv_step(tg, x, w, doc, g, heads):
    """One ConvQKV forward and backward of this train_gpt version, g as each part's gradient."""
    def step():
        x.grad = w.grad = None
        torch.autograd.backward(tg.ConvQKV.apply(x, w, doc, heads), (g, g, g))
    return step


def compare_versions(paths: list[str], x, w, doc, g, heads, rounds: int):
    """Each version's ConvQKV timed in turns (a path may repeat: the same code twice shows the noise)."""
    x.requires_grad_(True)
    w.requires_grad_(True)
    steps, grads = [], []
    for i, path in enumerate(paths):
        steps.append(conv_step(load_module(path, f"train_gpt_conv{i}"), x, w, doc, g, heads))
        steps[i]()  # compiles
        grads.append((x.grad.float(), w.grad.clone()))
    for i in range(1, len(paths)):
        dx, dw = (a - b for a, b in zip(grads[i], grads[0]))
        print(f"{paths[i]} against {paths[0]}: dx max diff {dx.abs().max().item():.3g}, "
              f"dw max diff / max {dw.abs().max().item() / grads[0][1].abs().max().item():.3g}")
    ms = [[] for _ in paths]
    for r in range(rounds):
        for i in turn_order(r, len(paths)):
            ms[i].append(cuda_ms(steps[i], 30))
    summary = paired_summary(ms)
    for path, times, (med, _, _, faster) in zip(paths, ms, summary):
        print(f"{path}: ms per layer {' '.join(f'{v:.3f}' for v in times)}; median {med:.3f}, "
              f"{med / summary[0][0]:.3f}x the first, faster in {faster} of {rounds} rounds")


def main():
    cli = argparse.ArgumentParser()
    cli.add_argument("--shape", default="48x2048")
    cli.add_argument("--bt", default="16,32")
    cli.add_argument("--warps", default="2,4")
    cli.add_argument("--code", help="comma-separated train_gpt.py versions: time their ConvQKV in turns instead")
    cli.add_argument("--rounds", type=int, default=6)
    a = cli.parse_args()
    args, device = tg.Hyperparameters(), torch.device("cuda")
    B, T = map(int, a.shape.split("x"))
    x, w, doc, g = inputs(B, T, args.model_dim, args.conv_size, device)
    if a.code:
        return compare_versions(a.code.split(","), x, w, doc, g, args.num_heads, a.rounds)
    layers = args.gdn_per_group * 2
    floor = {"conv_qkv_fwd": 2, "conv_qkv_bwd": 3, "conv_bwd": 3}  # [B, T, 3d] tensors read + written
    rows = []
    for BT in map(int, a.bt.split(",")):
        for name, fn in launches(x, w, doc, g, args.num_heads, BT)[0].items():
            for nw in map(int, a.warps.split(",")):
                fn(nw)  # compiles
                rows.append((name, BT, nw, cuda_ms(lambda: fn(nw), 20)))
                print(f"measured {name} BT={BT} warps={nw}: {rows[-1][3]:.3f} ms", flush=True)  # ~1 s to compile each
    print(f"shape {B}x{T}, {layers} GDN layers; * = current launch (BT={tg.ConvQKV.BT}, 4 warps; conv_bwd 2)")
    print(f"{'kernel':14s} {'BT':>4s} {'warps':>5s} {'ms/call':>8s} {'ms/step':>8s} {'floor ms':>8s}")
    for name, BT, nw, ms in sorted(rows, key=lambda r: (r[0], r[3])):
        mark = "*" if (BT, nw) == (tg.ConvQKV.BT, 2 if name == "conv_bwd" else 4) else ""
        floor_ms = floor[name] * x.numel() * 2 / (H100_TBPS * 1e9)
        print(f"{name:14s} {BT:4d} {nw:5d} {ms:8.3f} {ms * layers:8.2f} {floor_ms:8.3f} {mark}")


if __name__ == "__main__":
    main()
