"""Times one block's MLP, forward and backward, as training runs it: train_gpt's MLP (the fused relu^2 kernels on
a GPU), beside the same weights through the modules uncompiled (cuBLAS products and separate activation kernels;
inside the compiled blocks inductor fuses the activation, so that row bounds that path from above). Rounds
alternate the variants, so a drifting clock hits each alike; prints each variant's median ms a call and peak
memory above the inputs.

    python3 scripts/bench/bench_mlp.py --rounds 5 --calls 50
    python3 scripts/bench/bench_mlp.py --code train_gpt.py,.prev/train_gpt.py

--code times the fused path of each listed train_gpt.py version instead (the same weights and inputs), in turns.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
import train_gpt as tg  # noqa: E402
from scripts.common import cuda_ms, load_module, turn_order  # noqa: E402


def mlp_call(mlp: tg.MLP, x: torch.Tensor, g: torch.Tensor, fused: bool):
    """One forward and backward, through the fused kernels or the modules (what MLP.forward runs without gradients)."""
    y = mlp(x) if fused else mlp.proj(torch.nn.functional.relu(mlp.fc(x)).square())
    y.backward(g)


def main(argv=None):
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--tokens", type=int, default=98_304, help="rows of one call (48 x 2048: the proxy's step)")
    cli.add_argument("--rounds", type=int, default=5)
    cli.add_argument("--calls", type=int, default=50, help="timed calls a round, after as many untimed")
    cli.add_argument("--code", help="comma-separated train_gpt.py versions: their fused paths side by side")
    opt = cli.parse_args(argv)
    if not torch.cuda.is_available() or tg.triton is None:
        raise SystemExit("bench_mlp.py times the fused kernels: it needs a CUDA GPU and Triton")
    args = tg.Hyperparameters()
    dim = args.model_dim
    x = torch.randn(opt.tokens, dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    g = torch.randn(opt.tokens, dim, device="cuda", dtype=torch.bfloat16)
    variants = {}
    versions = [(path, load_module(path, f"train_gpt_mlp{i}")) for i, path in enumerate(opt.code.split(","))] \
        if opt.code else [("", tg)]
    torch.manual_seed(0)
    mlp = tg.MLP(dim, args.mlp_mult).cuda()
    torch.nn.init.normal_(mlp.proj.weight, std=dim ** -0.5)  # zero-initialised: nothing to differentiate
    for i, (path, module) in enumerate(versions):
        version = module.MLP(dim, args.mlp_mult).cuda()
        version.load_state_dict(mlp.state_dict())
        variants["fused" + (f", {i}: {path}" if path else "")] = (version, True)
    if not opt.code:
        variants["modules"] = (mlp, False)
    times, peaks, items = {name: [] for name in variants}, {}, list(variants.items())
    for rnd in range(opt.rounds):
        for name, (mlp, fused) in (items[i] for i in turn_order(rnd, len(items))):
            call = lambda: mlp_call(mlp, x, g, fused)  # noqa: E731
            with torch.autocast("cuda", dtype=torch.bfloat16):
                cuda_ms(call, opt.calls)  # warm-up: compilation of the kernels, the allocator's pools
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                times[name].append(cuda_ms(call, opt.calls))
            peaks[name] = (torch.cuda.max_memory_allocated() - base) / 2**20
            print(f"round {rnd + 1}/{opt.rounds} {name}: {times[name][-1]:.3f} ms", flush=True)
    print(f"\n{opt.tokens:,} x {dim} -> {args.mlp_mult * dim} -> {dim}, forward + backward, {opt.calls} calls a round")
    print("| variant | median ms | rounds (ms) | peak MiB above inputs |\n|---|---|---|---|")
    for name, ts in times.items():
        print(f"| {name} | {statistics.median(ts):.3f} | {', '.join(f'{t:.3f}' for t in ts)} | {peaks[name]:,.0f} |")


if __name__ == "__main__":
    main()
