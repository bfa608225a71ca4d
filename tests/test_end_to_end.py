"""main: two ranks (gloo, CPU) train, quantize, pack and score once; a cold --eval reproduces the score."""

import hashlib
import importlib.metadata
import os
import random
import re
import subprocess
import sys

import pytest

import train_gpt
from conftest import ROOT, TINY_ENV, encode_stream, random_document
from shards import write_shard


def number(pattern, text):
    found = re.findall(pattern, text)
    assert found, f"{pattern!r} not in output:\n{text[-3000:]}"
    return float(found[-1])


@pytest.fixture(scope="module")
def run(tokenizer, tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    rng = random.Random(3)
    write_shard(data / "fineweb_val_000000.bin", encode_stream(tokenizer, [random_document(rng) for _ in range(60)]))
    write_shard(data / "fineweb_train_000000.bin", encode_stream(tokenizer, [random_document(rng) for _ in range(600)]))
    work = tmp_path_factory.mktemp("work")
    # CUDA hidden: two ranks on a one-GPU machine would ask for a second device; this run is the CPU path
    env = dict(os.environ, **TINY_ENV, CUDA_VISIBLE_DEVICES="", DATA_PATH=str(data),
               TOKENIZER_PATH=tokenizer.model_path, ARTIFACT_PATH=str(work / "model.ptz"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "train_gpt.py")]
    out = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return work, env, out.stdout


def test_two_rank_run_trains_quantizes_and_scores_once(run):
    work, env, log = run
    assert "world_size:2" in log and "byte_proof:" in log and "match" in log
    stack = log.splitlines()[1]  # the second line: what the numbers were measured with
    # the installed package's version: PyPI's CUDA wheel says 2.11.0 where torch.__version__ says 2.11.0+cu130
    assert stack.startswith("stack: python:") and f" torch:{importlib.metadata.version('torch')} " in stack
    assert "gpus:none" in stack
    sha = hashlib.sha256(open(env["TOKENIZER_PATH"], "rb").read()).hexdigest()
    config = train_gpt.read_header((work / "model.ptz").read_bytes())[0]["config"]
    assert config["tokenizer_sha256"] == sha and config["vocab_size"] == 400
    assert sorted(p.name for p in work.iterdir()) == ["logs", "model.ptz"]  # no temporary file left
    overrides = re.search(r"env_overrides: (.*)", log).group(1).split()  # what a reader needs beside code_sha256
    assert "MODEL_DIM=64" in overrides and "GPTQ_BLOCK=32" in overrides
    assert not any(o.startswith("OMP_") for o in overrides)
    assert log.count("stopping: iterations after 25 steps") == 1
    assert "exported: the final weights (EMA_DECAY 0)" in log and "ema_last_decay" not in log
    started = number(r"train_start_unix:([\d.]+)\n", log)  # the wall clock a GPU sampler's samples line up with
    assert log.count("train_start_unix") == 1  # rank 0's
    assert (work / "model.ptz").stat().st_mtime - 600 < started < (work / "model.ptz").stat().st_mtime
    budget = re.search(r"time_budget: training:([\d.]+)s after_training:([\d.]+)s limit:600s each within$", log, re.M)
    assert budget and float(budget.group(1)) == number(r"stopping: .*train_time:([\d.]+)s", log)
    parts = [number(tag + r" .*eval_time:([\d.]+)s", log)
             for tag in ("pre_quant", "final_quantized_zstd22_roundtrip", "final_score_first_ttt")]
    assert float(budget.group(2)) >= sum(parts) + number(r"quantize_pack_time:([\d.]+)s", log) - 0.2  # rounding
    # packed straight after training, before any score: the seconds a reading that counts GPTQ as training adds
    packed = number(r"packed: ([\d.]+)s after the training clock stopped", log)
    assert number(r"quantize_pack_time:([\d.]+)s", log) - 0.1 <= packed <= float(budget.group(2)) - sum(parts) + 0.2
    assert log.index("packed: ") < log.index("pre_quant ")
    assert log.count("final_quantized_zstd22_roundtrip") == 1 and (work / "model.ptz").is_file()
    assert "calibration: 4 self-generated sequences x 32 tokens" in log
    assert re.search(r"quant_choice: scale:0\.1250 mlp:k2\.00/[\d.]+bits .* fits", log)  # 16 MB: the finest steps
    pre, post = number(r"pre_quant .*val_bpb:([\d.]+)", log), number(r"roundtrip .*val_bpb:([\d.]+)", log)
    first = number(r"step:1/25 train_loss:([\d.]+)", log)
    assert number(r"step:25/25 train_loss:([\d.]+)", log) < first - 0.5
    assert abs(post - pre) < 0.05 * pre
    assert number(r"margin:(-?\d+)", log) > 0
    # each rank adapts its own copy on its own windows; the scores are summed once
    assert log.count("final_score_first_ttt") == 1 and log.count("chunks scored, the first") == 1
    adapted = number(r"final_score_first_ttt .*val_bpb:([\d.]+)", log)
    assert adapted != post and abs(adapted - post) < 0.05 * post


def test_cold_eval_of_the_artifact_alone_reproduces_the_score(run, tmp_path):
    work, env, log = run
    cmd = [sys.executable, str(ROOT / "train_gpt.py"), "--eval", str(work / "model.ptz")]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert list(tmp_path.iterdir()) == [tmp_path / "logs"]  # it wrote no weights and read none but the artifact
    assert f"artifact_check:{work / 'model.ptz'} checksum:ok tokenizer:ok bytes_total:" in out.stdout
    assert re.search(r"^time_budget: evaluation:[\d.]+s limit:600s each within$", out.stdout, re.M)
    cold = number(r"roundtrip .*val_bpb:([\d.]+)", out.stdout)
    assert abs(cold - number(r"roundtrip .*val_bpb:([\d.]+)", log)) < 1e-6


def test_record_folder_from_the_run_log(run, tmp_path):
    sys.path.insert(0, str(ROOT / "records"))
    import make_record
    work, _, _ = run
    out = tmp_path / "record"
    assert make_record.main([str(work / "logs" / "e2e.txt"), "--out", str(out), "--name", "tiny", "--author", "ci",
                             "--github-id", "ci", "--blurb", "CPU smoke run", "--data-note", "synthetic shards"]) == 0
    assert (out / "submission.json").is_file() and (out / "e2e.txt").is_file()


def test_over_budget_run_fails_on_both_ranks_before_any_score(run, tmp_path):
    _, env, _ = run
    env = dict(env, ARTIFACT_CAP_BYTES="20000", ARTIFACT_PATH=str(tmp_path / "big.ptz"), ITERATIONS="3")
    (tmp_path / "big.ptz").write_bytes(b"an earlier good artifact")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "train_gpt.py")]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    text = out.stdout + out.stderr
    assert out.returncode != 0 and "over the 20,000-byte cap: no result is declared" in text
    assert "nothing fits the cap" in text and "final_quantized_zstd22_roundtrip" not in text
    assert (tmp_path / "big.ptz").read_bytes() == b"an earlier good artifact"  # never replaced by the over-cap one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.ptz", "logs"]
    assert "error on rank 0: ArtifactTooLarge: " in (tmp_path / "logs" / "e2e.txt").read_text()


# The two-rank run above as main produced it at 8373ed6 (Muon with equilibrated rows and NorMuon; the record before
# it came from 908f3ee's plain Muon) on 2 Intel Xeon CPU cores, its steps from 15 on and its scores as main produced
# them with the final weights exported (EMA_DECAY=0) and the warm-down over the last 60% (WARMDOWN_FRAC=0.6):
# a reorganised train_gpt.py must reproduce it. The
# first 15 steps reproduce to the printed decimal on every CPU seen; later the CPU's vector width shows: on 2
# AVX2-only cores (AMD EPYC) 908f3ee printed 3.1859 at step 20 and 2.41510 before quantization against its
# record's 3.2014 and 2.43417. So the late steps and the score get a tolerance a few times that, and the
# quantization's own cost (after minus before), which does not depend on the trajectory, a tight one.
RECORDED_LOSSES = {1: 5.9883, 2: 5.9161, 3: 5.724, 4: 5.3951, 5: 4.9476, 10: 3.9604, 15: 3.6585, 20: 3.3511, 25: 3.1561}
EXACT_STEPS = 15
RECORDED_ARTIFACT_BYTES = 118_931
RECORDED_BPB = (2.54841, 2.54859)  # val_bpb before and after quantization


def test_training_and_packing_reproduce_the_recorded_run(run):
    work, _, log = run
    losses = {int(s): float(x) for s, x in re.findall(r"step:(\d+)/25 train_loss:([\d.]+)", log)}
    size = (work / "model.ptz").stat().st_size
    assert losses.keys() == RECORDED_LOSSES.keys(), (losses, size)
    assert all(abs(losses[s] - RECORDED_LOSSES[s]) <= (2e-3 if s <= EXACT_STEPS else 0.05) for s in losses), losses
    assert abs(size - RECORDED_ARTIFACT_BYTES) <= 0.002 * RECORDED_ARTIFACT_BYTES, (losses, size)
    bpb = (number(r"pre_quant .*val_bpb:([\d.]+)", log), number(r"roundtrip .*val_bpb:([\d.]+)", log))
    assert abs(bpb[0] - RECORDED_BPB[0]) <= 0.06, bpb
    assert abs((bpb[1] - bpb[0]) - (RECORDED_BPB[1] - RECORDED_BPB[0])) <= 1e-3, bpb
