"""The Triton kernels' register budgets, compiled for Hopper on any machine (Triton's NVIDIA backend, no GPU)."""

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
def test_kernels_spill_nothing_read_wide_and_the_relu2_backward_fits_twice_an_sm():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compiled kernels, not the interpreter
    run = subprocess.run([sys.executable, "scripts/bench/kernel_resources.py"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = {r[1]: r for r in ([c.strip() for c in line.strip("|").split("|")] for line in run.stdout.splitlines()
                              if line.startswith("| train_gpt.py"))}
    relu2 = ["relu2 forward", "relu2 backward"]
    conv = [f"conv_qkv_{d}_kernel, part {p}" for d in ("fwd", "bwd") for p in range(3)] + ["conv_bwd_kernel"]
    assert list(rows) == relu2 + conv
    assert all(r[5] == "0" for r in rows.values())  # nothing spilled
    assert all(int(rows[c][8].split(" / ")[0]) > 0 for c in conv)  # the conv reads its bf16 rows 16 bytes a load
    # r read before the K loop held ~145 registers a thread: one program an SM where shared memory fits two
    by_registers, by_shared, _ = (int(n) for n in rows["relu2 backward"][7].split(" / "))
    assert by_registers >= 2 and by_shared >= 2, rows["relu2 backward"]
