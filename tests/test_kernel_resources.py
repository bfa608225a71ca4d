"""The fused kernels' register budgets, compiled for Hopper on any machine (Triton's NVIDIA backend, no GPU)."""

import importlib.util
import os
import subprocess
import sys

import pytest

from conftest import ROOT

needs_ptxas = pytest.mark.skipif(importlib.util.find_spec("triton") is None
                                 or importlib.util.find_spec("triton.backends.nvidia") is None,
                                 reason="compiles for sm_90: needs Triton with its NVIDIA backend")


@needs_ptxas
def test_relu2_backward_leaves_room_for_two_programs_an_sm():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compiled kernels, not the interpreter
    run = subprocess.run([sys.executable, "scripts/bench/kernel_resources.py"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in run.stdout.splitlines()
            if line.startswith("| train_gpt.py")]
    assert [(r[1], r[2]) for r in rows] == [("forward", "0"), ("backward", "0"), ("forward", "0.5"),
                                            ("backward", "0.5")]
    assert all(r[5] == "0" for r in rows)  # nothing spilled
    # r read before the K loop held ~145 registers a thread: one program an SM where shared memory fits two
    programs = [[int(n) for n in r[7].split(" / ")] for r in rows if r[1] == "backward"]
    assert all(by_registers >= 2 and by_shared >= 2 for by_registers, by_shared, _ in programs)
