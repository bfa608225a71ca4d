"""Counts the operations that one Muon step over train_gpt.py's model issues, for each version given: on a GPU
each is about one kernel launch, host work that sits between a step's backward and the next forward. Runs on
the CPU under torch's profiler; views and allocations are not counted. The model is the one the environment's
settings describe (the full-size default: ~10 s on 2 CPU cores).

    python3 scripts/bench/muon_ops.py --code train_gpt.py,.prev/other.py
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
from scripts.common import load_module  # noqa: E402

NOT_KERNELS = {"aten::" + op for op in (
    "view", "view_as", "reshape", "flatten", "mT", "t", "transpose", "split", "unbind", "select", "slice", "alias",
    "as_strided", "expand", "unsqueeze", "squeeze", "detach", "lift_fresh", "resolve_conj", "resolve_neg", "empty",
    "empty_like", "empty_strided")}


def muon_ops(code: str, version: int) -> Counter:
    """The outermost aten operations of the second Muon step (the first creates what later steps reuse)."""
    tg = load_module(code, f"train_gpt_v{version}")
    torch.manual_seed(0)
    args = tg.Hyperparameters()
    model = tg.GDNHybrid(args.model_config())
    opt = tg.build_optimizers(model, args)[0]  # train_gpt's Muon over the projections, at its settings
    matrices = opt.param_groups[0]["params"]
    for _ in range(2):
        for p in matrices:
            p.grad = torch.randn_like(p)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            opt.step()
    outer = lambda e: e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")  # noqa: E731
    return Counter(e.name for e in prof.events() if e.name.startswith("aten::") and e.name not in NOT_KERNELS
                   and outer(e))


def main(argv=None):
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--code", default=str(Path(__file__).resolve().parents[2] / "train_gpt.py"))
    for version, code in enumerate(cli.parse_args(argv).code.split(",")):
        ops = muon_ops(code, version)
        common = ", ".join(f"{name[6:]} {n}" for name, n in ops.most_common(8))
        print(f"{code}: {sum(ops.values())} operations in one Muon step ({common})")


if __name__ == "__main__":
    main()
