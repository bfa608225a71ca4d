"""scripts/bench/bench_muon.py on a tiny model: it checks that the versions take the same Muon steps, counts what
they compile after the warm-up, and (on a GPU) times them in turns."""

import os
import subprocess
import sys

import torch

from conftest import ROOT

TINY = {"MODEL_DIM": "128", "NUM_HEADS": "2", "NUM_KV_HEADS": "1", "GDN_PER_GROUP": "1"}


def bench_muon(*codes: str, profile: int = 0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/bench/bench_muon.py", "--code", ",".join(codes), "--steps", "2",
                           "--rounds", "2", "--profile", str(profile)], cwd=ROOT, env={**os.environ, **TINY},
                          capture_output=True, text=True, timeout=600)


def test_bench_muon_checks_the_updates_then_times_the_versions(tmp_path):
    other = tmp_path / "other.py"
    other.write_text((ROOT / "train_gpt.py").read_text())
    run = bench_muon("train_gpt.py", str(other))
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"{other}: 17 matrices, their change in 3 steps within 0.0e+00 of train_gpt.py's" in run.stdout, run.stdout
    if torch.cuda.is_available():
        assert "round 2/2" in run.stdout and run.stdout.splitlines()[-1].startswith(str(other)), run.stdout
    else:
        assert run.stdout.splitlines()[-1] == "no GPU: nothing timed"


def test_bench_muon_profiles_the_first_versions_steps():
    run = bench_muon("train_gpt.py", profile=1)
    assert run.returncode == 0, run.stderr[-3000:]
    if torch.cuda.is_available():
        profile = run.stdout.split("profile: GPU busy")[1]
        assert "matmul" in profile and "GPU idle between kernels" in profile, run.stdout[-3000:]
    else:
        assert run.stdout.splitlines()[-1] == "no GPU: nothing timed or profiled"


def test_bench_muon_refuses_a_version_whose_updates_differ(tmp_path):
    unscaled = tmp_path / "unscaled.py"  # tall matrices' updates without their sqrt(rows / columns) gain
    code = (ROOT / "train_gpt.py").read_text()
    assert "scales = scales * (shape[0] / shape[1]) ** 0.5" in code
    unscaled.write_text(code.replace("scales = scales * (shape[0] / shape[1]) ** 0.5", "pass"))
    run = bench_muon("train_gpt.py", str(unscaled))
    assert run.returncode != 0 and "not the same optimizer" in run.stderr, run.stderr[-3000:]
