"""scripts/bench_step.py end to end on a tiny model: its per-part breakdown calls the blocks outside the model's
own forward, so it breaks whenever a block reads something new from the model's context. GPU only."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="times CUDA kernels: runs on the GPU machine")
def test_bench_step_times_every_part_and_profiles(tmp_path):
    tiny = {"MODEL_DIM": "128", "NUM_HEADS": "2", "NUM_KV_HEADS": "1", "GDN_PER_GROUP": "1", "SWA_WINDOW": "128",
            "DATA_PATH": str(tmp_path / "no_shards")}
    run = subprocess.run([sys.executable, "bench_step.py", "--variants", "train", "--shapes", "2x256", "--steps", "2",
                          "--profile", "1"], cwd=ROOT / "scripts", env={**os.environ, **tiny},
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    for part in ("gdn block (mixer+mlp)", "swa block (attn+mlp)", "muon", "profile: GPU busy", "calls per step"):
        assert part in run.stdout, run.stdout[-3000:]
    assert run.stdout.splitlines()[-1].split()[1:3] == ["2x256", "train"]
