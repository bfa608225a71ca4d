"""What Python's garbage collector costs train_gpt.py's training loop. It runs that version's own train()
(bench_step.py's 'loop': accumulation 1 on the shards under DATA_PATH, after its compile warm-up) for --steps
steps and records every collection its steps trigger: how many of each generation and the host's time in them. A
collection stalls the host; one longer than the queued GPU work idles the GPU. Then it times one full collection
over all the process holds, before and after gc.freeze(): the pause a loop meets when its allocations trigger one.

    DATA_PATH=/tmp/proxy python3 scripts/bench/gc_pauses.py --code .prev/before.py --steps 300

One version a process: what a version compiled stays in the process and would weigh on the next one's pauses.
--compile on the CPU compiles the model as train_gpt.py does on a GPU (its compile_for_training, inductor's C++
in place of Triton), so that the process holds compiled graphs as a GPU run's does.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
from scripts.bench.bench_step import loop_trainer  # noqa: E402
from scripts.common import code_option, load_module  # noqa: E402


class Collections:
    """Each collection's start (perf_counter seconds), generation and host milliseconds while installed as a gc
    callback."""

    def __init__(self):
        self.seen, self.started = [], 0.0

    def __call__(self, phase: str, info: dict):
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.seen.append((self.started, info["generation"], 1000 * (time.perf_counter() - self.started)))

    def since(self, t: float) -> dict:
        """Host milliseconds of each collection that started at t or later, by generation."""
        ms = {0: [], 1: [], 2: []}
        for start, gen, took in self.seen:
            if start >= t:
                ms[gen].append(took)
        return ms

    def __enter__(self):
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc):
        gc.callbacks.remove(self)


def full_collection_ms(repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        gc.collect()
        times.append(1000 * (time.perf_counter() - t))
    return statistics.median(times)


def collections_in_loop(code: str, B: int, T: int, steps: int, device, compile_on_cpu: bool = False) -> dict:
    """The collections of `steps` steps of that version's train() (Collections.since its clock started: not its
    warm-up's), its ms a step, and a full collection's pause without and with the freeze, over what the process
    then holds."""
    tg = load_module(code, "train_gpt_probed")
    model, run = loop_trainer(tg, tg.Hyperparameters(), B, T, steps, device)
    if compile_on_cpu and device.type == "cpu":
        tg.compile_for_training(model)
    with Collections() as seen:
        result = run()
    ms, ms_step = seen.since(result["stopped_at"] - result["train_time"]), 1000 * result["train_time"] / steps
    frozen = gc.get_freeze_count()
    gc.unfreeze()  # a version that freezes leaves its objects frozen; the pause below is over all of them
    tracked = len(gc.get_objects())
    before = full_collection_ms()
    gc.freeze()
    after = full_collection_ms()
    gc.unfreeze()
    return {"ms": ms, "ms_step": ms_step, "frozen_by_train": frozen, "tracked": tracked,
            "full_ms": before, "full_ms_frozen": after}


def print_row(code: str, steps: int, r: dict):
    counts = "/".join(str(len(r["ms"][g])) for g in range(3))
    full = r["ms"][2]
    print(f"{code}: {steps} steps at {r['ms_step']:.1f} ms; collections gen0/1/2 {counts}; in them "
          f"{sum(sum(v) for v in r['ms'].values()):.1f} ms, gen2 {sum(full):.1f} ms (longest "
          f"{max(full, default=0.0):.1f}); train() froze {r['frozen_by_train']:,} objects", flush=True)
    print(f"  then {r['tracked']:,} objects tracked: a full collection takes {r['full_ms']:.1f} ms, "
          f"{r['full_ms_frozen']:.2f} ms after gc.freeze()", flush=True)


def main(argv=None):
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    code_option(cli, "the version of train_gpt.py")
    cli.add_argument("--steps", type=int, default=300, help="training steps the loop runs")
    cli.add_argument("--shape", default="48x2048", help="sequences x length of a step")
    cli.add_argument("--compile", action="store_true", help="on the CPU, compile as train_gpt does on a GPU")
    opt = cli.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    B, T = map(int, opt.shape.split("x"))
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}  torch {torch.__version__}  "
          f"python {sys.version.split()[0]}  gc thresholds {gc.get_threshold()}", flush=True)
    print_row(opt.code, opt.steps, collections_in_loop(opt.code, B, T, opt.steps, device, opt.compile))


if __name__ == "__main__":
    main()
