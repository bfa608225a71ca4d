"""Counts the operations that one Muon step over train_gpt.py's model issues, for each version given: on a GPU
each is about one kernel launch, host work that sits between a step's backward and the next forward. Runs on
the CPU under torch's profiler; views and allocations are not counted. The model is the one the environment's
settings describe (the full-size default: ~10 s on 2 CPU cores).

    python3 scripts/bench/muon_ops.py --code train_gpt.py,.prev/other.py

--floor also takes the step on the meta device, where nothing is computed but every tensor has the shape and dtype
it has on a GPU, and prints each operation's FLOPs and the bytes of the tensors it reads and writes: the step's
floor at a GPU's datasheet peaks, each kind of operation bounded by the slower of its products and its bytes.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
from scripts.common import code_option, load_module  # noqa: E402

NOT_KERNELS = {"aten::" + op for op in (
    "view", "view_as", "reshape", "flatten", "mT", "t", "transpose", "split", "unbind", "select", "slice", "alias",
    "as_strided", "expand", "unsqueeze", "squeeze", "detach", "lift_fresh", "resolve_conj", "resolve_neg", "empty",
    "empty_like", "empty_strided")}
PEAKS = {"H100": (989e12, 3.35e12), "H200": (989e12, 4.8e12)}  # SXM datasheets: dense bf16 FLOP/s, HBM bytes/s


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


class Traffic(TorchDispatchMode):
    """Calls of each aten operation and the bytes of the tensors it reads and writes; views move nothing."""

    def __init__(self):
        super().__init__()
        self.calls, self.bytes = Counter(), Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        schema, name = func._schema, func.overloadpacket.__name__
        given = dict(zip((a.name for a in schema.arguments), args)) | kwargs
        mutated = [given.get(a.name) for a in schema.arguments if a.alias_info is not None and a.alias_info.is_write]
        view = any(r.alias_info is not None for r in schema.returns) or name == "_unsafe_view"  # reshape's view
        if name.startswith("_record_function") or view and not mutated:  # the optimizer's profiling marks, views
            return out
        tensors = lambda x: [t for t in tree_leaves(x) if isinstance(t, torch.Tensor)]  # noqa: E731
        read = tensors([v for k, v in given.items() if k != "out"])
        self.calls[name] += 1
        self.bytes[name] += sum(t.nbytes for t in read + (tensors(mutated) or tensors(out)))
        return out


def muon_floor(code: str, version: int) -> tuple[Counter, Counter, Counter]:
    """Calls, bytes and FLOPs by operation of the second Muon step (the first creates what later steps reuse), on
    the meta device."""
    tg = load_module(code, f"train_gpt_floor_v{version}")
    args = tg.Hyperparameters()
    with torch.device("meta"):
        opt = tg.build_optimizers(tg.GDNHybrid(args.model_config()), args)[0]
        for p in opt.param_groups[0]["params"]:
            p.grad = torch.empty_like(p)
        opt.step()
        traffic, flops = Traffic(), FlopCounterMode(display=False)
        with flops, traffic:
            opt.step()
    by_op = Counter({op.__name__: n for op, n in flops.get_flop_counts()["Global"].items()})
    return traffic.calls, traffic.bytes, by_op


def print_floor(code: str, calls: Counter, moved: Counter, flops: Counter):
    def floor_ms(op, peak):
        return 1e3 * max(flops[op] / peak[0], moved[op] / peak[1])
    gpus = ", ".join(f"{g} {f / 1e12:.0f} TFLOP/s {b / 1e12:.2f} TB/s" for g, (f, b) in PEAKS.items())
    print(f"{code}: one Muon step on one GPU at the datasheet peaks ({gpus}); floor: the slower of an operation's "
          f"products and its bytes\n{'operation':<20}{'calls':>6}{'GFLOP':>9}{'GB':>8}"
          + "".join(f"{g + ' ms':>10}" for g in PEAKS))
    ops = sorted(calls, key=lambda op: -floor_ms(op, PEAKS["H100"]))
    for op in ops:
        print(f"{op:<20}{calls[op]:>6}{flops[op] / 1e9:>9.1f}{moved[op] / 1e9:>8.3f}"
              + "".join(f"{floor_ms(op, peak):>10.3f}" for peak in PEAKS.values()))
    print(f"{'all':<20}{sum(calls.values()):>6}{sum(flops.values()) / 1e9:>9.1f}{sum(moved.values()) / 1e9:>8.3f}"
          + "".join(f"{sum(floor_ms(op, peak) for op in ops):>10.3f}" for peak in PEAKS.values()))


def main(argv=None):
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    code_option(cli)
    cli.add_argument("--floor", action="store_true", help="also each operation's FLOPs, bytes and floor on a GPU")
    opt = cli.parse_args(argv)
    for version, code in enumerate(opt.code.split(",")):
        ops = muon_ops(code, version)
        common = ", ".join(f"{name[6:]} {n}" for name, n in ops.most_common(8))
        print(f"{code}: {sum(ops.values())} operations in one Muon step ({common})")
        if opt.floor:
            print_floor(code, *muon_floor(code, version))


if __name__ == "__main__":
    main()
