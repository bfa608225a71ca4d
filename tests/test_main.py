"""main's start-up: the command line, the pre-flight checks, the tokenizer's identity, the log, and --eval's
checks of an artifact. Every fault must stop before training, with the error in the log and no artifact written.
main runs in this process with the tiny settings set on Hyperparameters (as the environment would set them)."""

import hashlib
import json
import logging
import os
import random
import re
import subprocess
import sys

import pytest
import sentencepiece as spm
import torch

import train_gpt
from build_proxy import TRAINER_SETTINGS
from conftest import ROOT, TINY_ENV, TINY_MODEL, encode_stream, random_document
from shards import write_shard


def sha256(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def other_tokenizer(tmp_path_factory) -> str:
    """A second SentencePiece model of the same vocabulary size, trained on other text."""
    rng, folder = random.Random(7), tmp_path_factory.mktemp("other_tok")
    spm.SentencePieceTrainer.train(sentence_iterator=iter([random_document(rng) for _ in range(2000)]),
                                   model_prefix=str(folder / "tok"), vocab_size=400, minloglevel=2, num_threads=1,
                                   **TRAINER_SETTINGS)
    return str(folder / "tok.model")


def set_settings(monkeypatch, settings: dict):
    """What train_gpt reads from the environment at import, set on the class as from_environment would cast it."""
    for name, value in settings.items():
        key = name.lower()
        if not hasattr(train_gpt.Hyperparameters, key):  # OMP_NUM_THREADS and the like
            continue
        monkeypatch.setattr(train_gpt.Hyperparameters, key, type(getattr(train_gpt.Hyperparameters, key))(value))


@pytest.fixture
def export(tokenizer, tmp_path, monkeypatch):
    """A build_proxy-style export (shards and manifest.json naming the tokenizer), the tiny settings, and a
    working folder to run in."""
    data, work = tmp_path / "data", tmp_path / "work"
    work.mkdir()
    rng = random.Random(3)
    write_shard(data / "fineweb_val_000000.bin", encode_stream(tokenizer, [random_document(rng) for _ in range(30)]))
    for i in range(2):
        write_shard(data / f"fineweb_train_00000{i}.bin",
                    encode_stream(tokenizer, [random_document(rng) for _ in range(300)]))
    (data / "manifest.json").write_text(json.dumps({"tokenizer": {
        "file": "tokenizer.model", "sha256": sha256(tokenizer.model_path), "vocab_size": 400}}))
    monkeypatch.chdir(work)
    set_settings(monkeypatch, dict(TINY_ENV, DATA_PATH=str(data), TOKENIZER_PATH=tokenizer.model_path,
                                   ARTIFACT_PATH=str(work / "model.ptz"), RUN_ID="run"))
    return data, work


def main(monkeypatch, *argv):
    monkeypatch.setattr(sys, "argv", ["train_gpt.py", *argv])
    train_gpt.main()


def log(work) -> str:
    return (work / "logs" / "run.txt").read_text()


def nothing_trained_or_written(work):
    text = log(work)
    assert "model_params" not in text and "step:" not in text  # stopped before building the model
    assert sorted(p.name for p in work.iterdir()) == ["logs"]  # no artifact, no half-written one


def bad_second_shard(data):
    path = data / "fineweb_train_000001.bin"
    path.write_bytes(b"\0" * 8 + path.read_bytes()[8:])


@pytest.mark.parametrize("settings, damage, message", [
    (dict(ARTIFACT_PATH="missing/model.ptz"), None, "missing/model.ptz: missing is missing or not writable"),
    (dict(ARTIFACT_PATH="."), None, "or the path is a folder"),
    (dict(EVAL_STRIDE="0"), None, "EVAL_STRIDE=0 must be in 1..EVAL_SEQ_LEN=64"),
    (dict(EVAL_STRIDE="65"), None, "EVAL_STRIDE=65 must be in 1..EVAL_SEQ_LEN=64"),
    (dict(EVAL_SEQ_LEN="100000"), None, "shorter than EVAL_SEQ_LEN=100000"),
    ({}, bad_second_shard, "fineweb_train_000001.bin: bad magic 0"),
    (dict(MAX_WALLCLOCK_SECONDS="-1"), None, "MAX_WALLCLOCK_SECONDS=-1.0 must be >= 0"),
    (dict(MATRIX_LR="-0.1"), None, "MATRIX_LR=-0.1 must be >= 0"),
    (dict(TRAIN_BATCH_TOKENS="0"), None, "TRAIN_BATCH_TOKENS=0 must be > 0"),
    (dict(TRAIN_BATCH_TOKENS="300"), None, "TRAIN_BATCH_TOKENS=300 is not a multiple"),
    (dict(TRAIN_LOG_EVERY="0", ITERATIONS="0"), None, "ITERATIONS=0 must be > 0; TRAIN_LOG_EVERY=0 must be > 0"),
])
def test_start_up_faults_stop_before_training_with_the_error_in_the_log(export, monkeypatch, settings, damage,
                                                                         message):
    data, work = export
    set_settings(monkeypatch, settings)
    if damage:
        damage(data)
    with pytest.raises(Exception, match=message):
        main(monkeypatch)
    nothing_trained_or_written(work)
    assert "error on rank 0: " in log(work) and message in log(work)


def test_shards_of_another_tokenizer_are_refused_at_start_up(export, monkeypatch, other_tokenizer):
    """The byte proof cannot see this: any tokenizer of the right size decodes the shards to some text."""
    data, work = export
    set_settings(monkeypatch, dict(TOKENIZER_PATH=other_tokenizer))
    with pytest.raises(ValueError, match="is not the tokenizer of the shards") as err:
        main(monkeypatch)
    assert other_tokenizer in str(err.value) and str(data / "manifest.json") in str(err.value)
    nothing_trained_or_written(work)


def test_the_tokenizer_is_logged_and_an_export_without_a_manifest_says_nothing_was_compared(export, monkeypatch,
                                                                                             tokenizer):
    data, work = export
    set_settings(monkeypatch, dict(EVAL_STRIDE="0"))  # stops right after the tokenizer check
    with pytest.raises(ValueError):
        main(monkeypatch)
    assert f"sha256:{sha256(tokenizer.model_path)} vocab:400 manifest:match" in log(work)
    (data / "manifest.json").unlink()
    with pytest.raises(ValueError):
        main(monkeypatch)
    assert "manifest:none, nothing compared" in log(work)


def test_misspelt_settings_are_warned_with_the_closest_name_and_others_are_left_alone(export, monkeypatch, capsys):
    _, work = export
    for name in ("MAX_WALLCLOK_SECONDS", "EVAL_STRIDES", "MAX_JOBS", "LOCAL_WORLD_SIZE", "MASTER_PORT",
                 "TOKENIZERS_PARALLELISM", "DATA"):
        monkeypatch.setenv(name, "3")
    set_settings(monkeypatch, dict(EVAL_STRIDE="0"))
    with pytest.raises(ValueError):
        main(monkeypatch)
    warnings = [line for line in log(work).splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: EVAL_STRIDES is read by no setting; did you mean EVAL_STRIDE?",
                        "warning: MAX_WALLCLOK_SECONDS is read by no setting; did you mean MAX_WALLCLOCK_SECONDS?"]
    assert warnings[1] in capsys.readouterr().out


def test_settings_are_read_from_the_environment_by_name_and_typed_by_their_default(monkeypatch):
    monkeypatch.setenv("STEPS", "7")
    monkeypatch.setenv("LR", "2")
    monkeypatch.setattr(train_gpt, "SETTINGS", [])

    @train_gpt.from_environment
    class Settings:
        steps, lr, name, pairs = 10, 0.5, "x", (1, 2)

    assert (Settings.steps, Settings.lr, Settings.name, Settings.pairs) == (7, 2.0, "x", (1, 2))
    assert type(Settings.lr) is float and train_gpt.SETTINGS == ["STEPS", "LR", "NAME"]


def test_rank_0_logs_every_line_afresh_and_the_other_ranks_only_their_errors(tmp_path, capsys):
    path = tmp_path / "run.txt"
    path.write_text("an older run\n")
    train_gpt.start_logging(0, str(path))
    train_gpt.log("step:1")
    train_gpt.start_logging(1, str(path))
    train_gpt.log("step:1 on rank 1")
    logging.getLogger("train_gpt").error("error on rank 1: boom")
    logging.basicConfig(handlers=[], force=True)  # closes the files
    assert path.read_text() == "step:1\nerror on rank 1: boom\n" and capsys.readouterr().out == "step:1\n"


def test_a_reused_run_id_starts_a_fresh_log(export, monkeypatch):
    _, work = export
    (work / "logs").mkdir()
    (work / "logs" / "run.txt").write_text("step:25/25 train_loss:1.0 from an older run\n")
    set_settings(monkeypatch, dict(EVAL_STRIDE="0"))
    with pytest.raises(ValueError):
        main(monkeypatch)
    assert log(work).startswith("run_id:run ") and "older run" not in log(work)


@pytest.mark.parametrize("argv", [["--eval"], ["--evaluate", "model.ptz"], ["model.ptz"]])
def test_the_command_line_is_parsed_and_nothing_runs_on_a_bad_one(export, monkeypatch, argv):
    _, work = export
    with pytest.raises(SystemExit) as err:
        main(monkeypatch, *argv)
    assert err.value.code == 2 and not (work / "model.ptz").exists() and not (work / "logs").exists()


def test_from_the_shell_a_start_up_fault_exits_non_zero_and_logs_why(export, tokenizer):
    """The same as a user: argparse's usage error (exit 2) before any log; a pre-flight fault (exit 1) in the log."""
    data, work = export
    env = {**os.environ, **TINY_ENV, "DATA_PATH": str(data), "TOKENIZER_PATH": tokenizer.model_path,
           "ARTIFACT_PATH": str(work / "model.ptz"), "RUN_ID": "run", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, str(ROOT / "train_gpt.py")]
    out = subprocess.run(cmd + ["--eval"], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--eval: expected one argument" in out.stderr
    out = subprocess.run(cmd, cwd=work, env=dict(env, EVAL_STRIDE="0"), capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "EVAL_STRIDE=0 must be in 1..EVAL_SEQ_LEN=64" in out.stderr
    assert "error on rank 0: ValueError: EVAL_STRIDE=0" in log(work)
    nothing_trained_or_written(work)


def packed(sha: str) -> bytes:
    """A tiny model of the export's vocabulary, every tensor in fp16, recording the tokenizer `sha`."""
    torch.manual_seed(0)
    model = train_gpt.GDNHybrid(dict(TINY_MODEL, vocab_size=400))
    return train_gpt.pack_artifact(dict(model.cfg, tokenizer_sha256=sha),
                                   {k + ":f": v.half() for k, v in model.state_dict().items()})


def flip_a_middle_byte(blob: bytes) -> bytes:
    return blob[:len(blob) // 2] + bytes([blob[len(blob) // 2] ^ 1]) + blob[len(blob) // 2 + 1:]


def test_eval_scores_a_sound_artifact_and_says_it_checked_it(export, monkeypatch, tokenizer):
    _, work = export
    blob = packed(sha256(tokenizer.model_path))
    (work / "a.ptz").write_bytes(blob)
    set_settings(monkeypatch, dict(EVAL_STRIDE="64"))  # disjoint windows: a quicker score
    main(monkeypatch, "--eval", "a.ptz")
    total = len(blob) + len((ROOT / "train_gpt.py").read_bytes())
    assert (f"artifact_check:a.ptz checksum:ok tokenizer:ok bytes_total:{total} margin:{16_000_000 - total}"
            in log(work))
    text = log(work)  # the fixed score, then the adapted one
    fixed, adapted = (float(re.search(tag + r" .*val_bpb:([\d.]+)", text).group(1))
                      for tag in ("final_quantized_zstd22_roundtrip", "final_score_first_ttt"))
    assert text.index("final_quantized_zstd22_roundtrip") < text.index("final_score_first_ttt") and fixed != adapted
    chunks, trained, steps = map(int, re.search(r"score-first TTT: (\d+) chunks scored, the first (\d+) trained on, "
                                                r"(\d+) SGD steps", text).groups())
    assert trained == chunks - 1 >= 1 and steps >= trained


def test_eval_without_adaptation_reports_the_fixed_score_alone(export, monkeypatch, tokenizer):
    _, work = export
    (work / "a.ptz").write_bytes(packed(sha256(tokenizer.model_path)))
    set_settings(monkeypatch, dict(EVAL_STRIDE="64", TTT_EPOCHS="0"))
    main(monkeypatch, "--eval", "a.ptz")
    assert "final_quantized_zstd22_roundtrip" in log(work) and "score-first" not in log(work)


def test_an_adaptation_sequence_longer_than_a_chunk_is_refused_before_anything_runs(export, monkeypatch):
    _, work = export
    set_settings(monkeypatch, dict(TTT_CHUNK_TOKENS="32", TTT_SEQ_LEN="64"))
    with pytest.raises(ValueError, match="TTT_SEQ_LEN=64 is longer than a chunk's 32 tokens"):
        main(monkeypatch)
    nothing_trained_or_written(work)


@pytest.mark.parametrize("case, message", [
    ("a flipped byte", "checksum mismatch: the file is truncated or corrupt"),
    ("truncated", "checksum mismatch"),
    ("another tokenizer's", "records tokenizer sha256 [0-9a-f]{64} but TOKENIZER_PATH has"),
    ("over the cap", "is 1 bytes over the"),
    ("missing", "no artifact at a.ptz"),
])
def test_eval_refuses_a_corrupt_foreign_over_cap_or_missing_artifact_before_scoring(
        export, monkeypatch, tokenizer, other_tokenizer, case, message):
    _, work = export
    blob = packed(sha256(tokenizer.model_path))
    files = {"a flipped byte": flip_a_middle_byte(blob), "truncated": blob[:-1],
             "another tokenizer's": packed(sha256(other_tokenizer)), "over the cap": blob}
    if case in files:
        (work / "a.ptz").write_bytes(files[case])
    if case == "over the cap":
        set_settings(monkeypatch, dict(ARTIFACT_CAP_BYTES=str(len(blob) + len((ROOT / "train_gpt.py").read_bytes())
                                                              - 1)))
    with pytest.raises(Exception, match=message):
        main(monkeypatch, "--eval", "a.ptz")
    assert "error on rank 0" in log(work) and "final_quantized" not in log(work) and "byte_proof" not in log(work)


def test_the_time_budget_line_names_the_phase_over_the_limit(monkeypatch):
    lines = []
    monkeypatch.setattr(train_gpt, "log", lines.append)
    train_gpt.log_time_budget(training=590.04, after_training=212.44)
    train_gpt.log_time_budget(training=600.5, after_training=12.0)
    assert lines == ["time_budget: training:590.0s after_training:212.4s limit:600s each within",
                     "time_budget: training:600.5s after_training:12.0s limit:600s each OVER in training"]
