"""Times one Muon step over train_gpt.py's model for each version given, in turns, on the GPU (the CPU runs it
too, for the tests). Every step sets the momentum the schedule would, so a version that compiles again when the
momentum changes shows it: the graphs each compiled after its warm-up are listed. Each version first takes the
same steps from the same weights and gradients, and the weights must move as the first version's do. The model
is the one the environment's settings describe (the full-size default).

    python3 scripts/bench/bench_muon.py --code train_gpt.py,.prev/other.py --rounds 6 --steps 50

--profile N then profiles N Muon steps of the first version: its GPU time by kernel family, the --top heaviest
kernels and the idle gaps, as bench_step.py's --profile does for the whole training step.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch._dynamo.utils import counters

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
from scripts.bench.bench_step import print_profile, profile_kernels  # noqa: E402
from scripts.common import code_option, cuda_ms, load_module, paired_summary, turn_order  # noqa: E402

WARMUP_STEPS = 3
SAME_UPDATE = 0.1  # Newton-Schulz in bf16 rounds differently when fused; a changed formula moves tens of percent


def muon_runner(code: str, version: int, device) -> tuple[list, object]:
    """That version's Muon's projections, with fixed random gradients, and a function that takes one step at the
    schedule's next learning rate and momentum."""
    tg = load_module(code, f"train_gpt_v{version}")
    args = tg.Hyperparameters()
    torch.manual_seed(0)
    model = tg.GDNHybrid(args.model_config()).to(device)
    opts = tg.build_optimizers(model, args)
    muon, matrices = opts[0], opts[0].param_groups[0]["params"]
    gen = torch.Generator(device).manual_seed(1)
    for p in matrices:
        p.grad = torch.randn(p.shape, device=device, generator=gen) * 1e-3
    step = [0]

    def one_step():
        tg.set_schedule(opts, step[0], 0.0, args)
        muon.step()
        step[0] += 1
    return matrices, one_step


def worst_difference(a: list, b: list) -> float:
    return max(((x - y).abs().max() / x.abs().max().clamp_min(1e-30)).item() for x, y in zip(a, b))


def main(argv=None):
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    code_option(cli)
    cli.add_argument("--rounds", type=int, default=6)
    cli.add_argument("--steps", type=int, default=50, help="Muon steps a version takes in each round")
    cli.add_argument("--profile", type=int, default=0, help="profile this many Muon steps of the first version")
    cli.add_argument("--top", type=int, default=15, help="heaviest kernels the profile lists")
    opt = cli.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    codes = opt.code.split(",")
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}  torch {torch.__version__}")
    timers, first = [], None
    for i, code in enumerate(codes):
        matrices, one_step = muon_runner(code, i, device)
        before = [p.detach().clone() for p in matrices]
        for _ in range(WARMUP_STEPS):
            one_step()
        moved = [p.detach() - b for p, b in zip(matrices, before)]
        first = first or moved
        diff = worst_difference(first, moved)
        graphs = counters["stats"]["unique_graphs"]
        for _ in range(opt.steps):
            one_step()
        print(f"{code}: {len(matrices)} matrices, their change in {WARMUP_STEPS} steps within {diff:.1e} of "
              f"{codes[0]}'s; {counters['stats']['unique_graphs'] - graphs} graph(s) compiled in the "
              f"{opt.steps} steps after them", flush=True)
        if diff > SAME_UPDATE:
            sys.exit(f"{code}: its Muon steps differ from {codes[0]}'s by {diff:.1e}: not the same optimizer")
        timers.append(one_step)
    if device.type != "cuda":
        print("no GPU: nothing timed" + (" or profiled" if opt.profile else ""))
        return
    times = [[] for _ in timers]
    for r in range(opt.rounds):
        for j in turn_order(r, len(timers)):
            times[j].append(cuda_ms(timers[j], opt.steps))
        print(f"round {r + 1}/{opt.rounds}: " + ", ".join(f"{t[-1]:.3f}" for t in times) + " ms/step", flush=True)
    width = max(len(c) for c in codes) + 1
    print(f"\nMuon steps in turns, {opt.rounds} rounds of {opt.steps}; difference and faster rounds against "
          f"{codes[0]}\n{'version':<{width}}{'median ms':>10}{'min ms':>8}{'diff ms':>9}{'faster':>8}")
    summary = paired_summary(times)
    for code, (med, low, diff, wins) in zip(codes, summary):
        print(f"{code:<{width}}{med:>10.3f}{low:>8.3f}{diff:>+9.3f}{wins:>5}/{opt.rounds}")
    if opt.profile:
        print_profile(*profile_kernels(timers[0], opt.profile, opt.top), summary[0][0])


if __name__ == "__main__":
    main()
