"""scripts/bench/trials.py on CPU: variants parse, eval-only variants reuse the trained model, rows are scored."""

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

import train_gpt
from conftest import ROOT, tiny_args

from scripts.bench import trials


def test_variants_split_training_from_packing_and_evaluation_settings():
    assert trials.parse_variant("base") == ({}, {}, {})
    assert trials.parse_variant("MATRIX_LR=0.03 EVAL_SEQ_LEN=1024") == ({"matrix_lr": "0.03"}, {},
                                                                         {"eval_seq_len": "1024"})
    assert trials.parse_variant("EMBED_LR=0.1 EMBED_BITS=7 CALIB_SEQS=64 GPTQ_DAMP=0.003", quant=True) == (
        {"embed_lr": "0.1"}, {"embed_bits": "7", "calib_seqs": "64", "gptq_damp": "0.003"}, {})
    with pytest.raises(SystemExit, match="changes only the packed copy.*--quant"):
        trials.parse_variant("CALIB_SEQS=64")  # without --quant its rows would repeat the base's
    for bad in ("MATRIX_LR", "NOT_A_SETTING=1", "matrix-lr=2"):
        with pytest.raises(SystemExit, match="bad variant item"):
            trials.parse_variant(bad)
    with pytest.raises(SystemExit, match="trials never adapt"):
        trials.parse_variant("TTT_LR=0.1")


def test_overrides_keep_the_setting_type_and_leave_the_original_alone(markov_data):
    args = tiny_args(markov_data)
    changed = trials.with_overrides(args, {"matrix_lr": "0.03", "iterations": "7"})
    assert changed.matrix_lr == 0.03 and changed.iterations == 7 and isinstance(changed.iterations, int)
    assert args.matrix_lr == 0.02 and args.iterations == 60


def test_trials_train_once_per_training_config_and_score_every_row(markov_data, tokenizer, capsys, tmp_path):
    args = tiny_args(markov_data, iterations=20, vocab_size=64)
    val = train_gpt.load_val_tokens(args.val_files, args.vocab_size)[:400]
    luts = train_gpt.build_sentencepiece_luts(tokenizer, 64, torch.device("cpu"))
    out = tmp_path / "rows.jsonl"
    variants = ["base", "base EVAL_SEQ_LEN=32", "MATRIX_LR=0.0 EMBED_LR=0.0 SCALAR_LR=0.0"]
    rows = trials.run(args, variants, val, luts, torch.device("cpu"), train_tokens=30_000, out=out)
    assert capsys.readouterr().out.count("(training)") == 2
    assert [r["variant"] for r in rows] == variants and [r["eval"] for r in rows] == ["64/16", "32/16", "64/16"]
    assert all(r["steps"] == 20 and r["tokens"] == 20 * 512 and r["eval_tokens"] == 399 for r in rows)
    # a model that never learned stays near the uniform 6 bits per token; the trained one does far better
    assert rows[0]["val_bpb"] < rows[2]["val_bpb"] - 0.5
    assert [json.loads(line)["variant"] for line in out.read_text().splitlines()] == variants
    text = trials.table(rows)
    assert text.count("\n| ") == len(rows) and "+0.00000" in text


def test_a_failing_variant_is_reported_and_the_others_still_run(markov_data, tokenizer, capsys, monkeypatch):
    args = tiny_args(markov_data, iterations=5, vocab_size=64)
    val = train_gpt.load_val_tokens(args.val_files, args.vocab_size)[:200]
    luts = train_gpt.build_sentencepiece_luts(tokenizer, 64, torch.device("cpu"))
    real = trials.train_variant

    def train_or_fail(args, device, train_tokens, ema_decays):
        if args.matrix_lr == 0.5:
            raise RuntimeError("kernel compile failed")
        return real(args, device, train_tokens, ema_decays)

    monkeypatch.setattr(trials, "train_variant", train_or_fail)
    rows = trials.run(args, ["MATRIX_LR=0.5", "base"], val, luts, torch.device("cpu"), train_tokens=30_000)
    assert rows[0] == {"variant": "MATRIX_LR=0.5", "error": "RuntimeError: kernel compile failed"}
    assert rows[1]["steps"] == 5 and "Traceback" in capsys.readouterr().err
    text = trials.table(rows)
    assert "failed: RuntimeError: kernel compile failed" in text and "+0.00000" in text


def test_quant_adds_a_score_from_the_fitted_artifact_per_trained_model(markov_data, tokenizer, capsys):
    args = tiny_args(markov_data, iterations=15, vocab_size=64, artifact_cap_bytes=200_000, fit_slack_bytes=150_000)
    val = train_gpt.load_val_tokens(args.val_files, args.vocab_size)[:300]
    luts = train_gpt.build_sentencepiece_luts(tokenizer, 64, torch.device("cpu"))
    rows = trials.run(args, ["base", "base EVAL_SEQ_LEN=32"], val, luts, torch.device("cpu"), train_tokens=30_000,
                      quant=True)
    out = capsys.readouterr().out
    assert out.count("(training)") == 1 and out.count("quant_choice:") == 1
    assert rows[0]["artifact_bytes"] == rows[1]["artifact_bytes"] > 0
    assert rows[0]["val_bpb_quant"] != rows[0]["val_bpb"] and abs(rows[0]["val_bpb_quant"] - rows[0]["val_bpb"]) < 0.3
    assert "| - | - |" not in trials.table(rows)
    unquantized = {k: v for k, v in rows[0].items() if k != "val_bpb_quant"}
    assert trials.table([unquantized]).endswith("| - | - |")


def test_packing_variants_share_the_trained_model_and_pack_it_their_own_way(markov_data, tokenizer, capsys):
    args = tiny_args(markov_data, iterations=15, vocab_size=64, artifact_cap_bytes=200_000, fit_slack_bytes=150_000)
    val = train_gpt.load_val_tokens(args.val_files, args.vocab_size)[:300]
    luts = train_gpt.build_sentencepiece_luts(tokenizer, 64, torch.device("cpu"))
    variants = ["base", "base CALIB_SEQS=2", "CALIB_SEQS=2 EVAL_SEQ_LEN=32", "QUANT_BITS=4"]
    rows = trials.run(args, variants, val, luts, torch.device("cpu"), train_tokens=30_000, quant=True)
    out = capsys.readouterr().out
    assert out.count("(training)") == 1 and out.count("(packing)") == out.count("quant_choice:") == 3
    assert out.count(f"calibration: {args.calib_seqs} self-generated") == 2 and out.count("calibration: 2 ") == 1
    assert [r["variant"] for r in rows] == variants and len({r["val_bpb"] for r in rows if r["eval"] == "64/16"}) == 1
    assert rows[2]["artifact_bytes"] == rows[1]["artifact_bytes"] and rows[2]["eval"] == "32/16"
    assert rows[3]["artifact_bytes"] < rows[0]["artifact_bytes"]  # 15 levels pack smaller than 63
    assert len({rows[0]["val_bpb_quant"], rows[1]["val_bpb_quant"], rows[3]["val_bpb_quant"]}) == 3


def test_ema_decays_score_more_averages_of_the_same_run(markov_data, tokenizer, capsys):
    """An extra EMA at EMA_DECAY's own decay scores exactly as the variant's row; decay 0 is the final weights."""
    args = tiny_args(markov_data, iterations=20, vocab_size=64)
    val = train_gpt.load_val_tokens(args.val_files, args.vocab_size)[:400]
    luts = train_gpt.build_sentencepiece_luts(tokenizer, 64, torch.device("cpu"))
    rows = trials.run(args, ["base", "base EVAL_SEQ_LEN=32"], val, luts, torch.device("cpu"), train_tokens=30_000,
                      ema_decays=(0.0, args.ema_decay))
    out = capsys.readouterr().out
    assert out.count("(training)") == 1
    # 20 steps end the ramp n/(n+10) at 0.667: 0.9 never binds, for the extra EMA as for EMA_DECAY's own
    assert "EMA 0.9 and EMA_DECAY 0.9 both ended at decay 0.6667 after 20 steps" in out
    assert "EMA 0 and" not in out
    assert [r["variant"] for r in rows] == ["base", "base [EMA 0]", "base [EMA 0.9]", "base EVAL_SEQ_LEN=32",
                                            "base EVAL_SEQ_LEN=32 [EMA 0]", "base EVAL_SEQ_LEN=32 [EMA 0.9]"]
    assert all(r["steps"] == 20 for r in rows)
    assert rows[2]["val_bpb"] == rows[0]["val_bpb"] and rows[5]["val_bpb"] == rows[3]["val_bpb"]
    assert rows[1]["val_bpb"] != rows[0]["val_bpb"]  # the final weights are not their average
    assert rows[1]["val_bpb"] < 6.0 - 0.5  # and they were trained: far below the uniform 6 bits a token


def test_quant_packs_each_ema_average_as_well(markov_data, tokenizer, capsys):
    args = tiny_args(markov_data, iterations=15, vocab_size=64, artifact_cap_bytes=200_000, fit_slack_bytes=150_000)
    val = train_gpt.load_val_tokens(args.val_files, args.vocab_size)[:300]
    luts = train_gpt.build_sentencepiece_luts(tokenizer, 64, torch.device("cpu"))
    rows = trials.run(args, ["base"], val, luts, torch.device("cpu"), train_tokens=30_000, quant=True,
                      ema_decays=(0.0,))
    out = capsys.readouterr().out
    assert out.count("(training)") == 1 and out.count("quant_choice:") == 2
    assert [r["variant"] for r in rows] == ["base", "base [EMA 0]"] and all(r["artifact_bytes"] > 0 for r in rows)
    assert rows[1]["val_bpb_quant"] != rows[0]["val_bpb_quant"]  # the final weights, packed, are not the average's
    delta = rows[1]["val_bpb_quant"] - rows[0]["val_bpb_quant"]
    assert trials.table(rows).splitlines()[-1].endswith(f"| {delta:+.5f} |")


def test_an_ema_equal_to_the_exported_weights_is_named_and_packed_once(markov_data, tokenizer, capsys):
    """With EMA_DECAY 0 (the default) an extra EMA at 0 is the variant's own final weights."""
    args = tiny_args(markov_data, iterations=15, vocab_size=64, ema_decay=0.0, artifact_cap_bytes=200_000,
                     fit_slack_bytes=150_000)
    val = train_gpt.load_val_tokens(args.val_files, args.vocab_size)[:300]
    luts = train_gpt.build_sentencepiece_luts(tokenizer, 64, torch.device("cpu"))
    rows = trials.run(args, ["base"], val, luts, torch.device("cpu"), train_tokens=30_000, quant=True,
                      ema_decays=(0.0, 0.5))
    out = capsys.readouterr().out
    assert "EMA 0 and EMA_DECAY 0 both ended at decay 0.0000 after 15 steps" in out
    assert "EMA 0.5 and" not in out  # 0.5 binds from step 10 on: an average of its own
    assert out.count("quant_choice:") == 2
    assert [r["variant"] for r in rows] == ["base", "base [EMA 0]", "base [EMA 0.5]"]
    assert rows[1]["val_bpb"] == rows[0]["val_bpb"] and rows[1]["val_bpb_quant"] == rows[0]["val_bpb_quant"]
    assert rows[2]["val_bpb"] != rows[0]["val_bpb"]


def test_ema_decays_reject_what_is_not_a_decay():
    assert trials.ema_decays("0,0.99") == (0.0, 0.99)
    for bad in ("", "1", "0.9,x", "-0.1"):
        with pytest.raises(Exception, match="expected decays in"):
            trials.ema_decays(bad)


def test_equal_steps_script_trains_each_version_in_its_own_tree(markov_data, tokenizer, tmp_path):
    """Two copies of one train_gpt.py on the CPU give equal rows, each against the first version's same seed."""
    (markov_data / "tokenizer.model").write_bytes(Path(tokenizer.model_path).read_bytes())
    copy = tmp_path / "same_code.py"
    copy.write_bytes((ROOT / "train_gpt.py").read_bytes())
    tiny = {"VOCAB_SIZE": "400", "MODEL_DIM": "64", "NUM_HEADS": "2", "NUM_KV_HEADS": "1", "GDN_PER_GROUP": "1",
            "MLP_MULT": "2", "SWA_WINDOW": "16", "TRAIN_SEQ_LEN": "64", "MICRO_BATCH_SEQS": "8",
            "TRAIN_BATCH_TOKENS": "512", "COMPILE_WARMUP_STEPS": "0", "EVAL_SEQ_LEN": "64", "EVAL_STRIDE": "32",
            "EVAL_BATCH_SEQS": "8", "DATA": str(markov_data), "OUT": str(tmp_path / "out"), "ITERATIONS": "3",
            "SEEDS": "1 2", "VAL_TOKENS": "300", "CUDA_VISIBLE_DEVICES": ""}  # plumbing: no GPU compiles
    run = subprocess.run(["bash", str(ROOT / "scripts" / "bench" / "equal_steps.sh"), str(ROOT / "train_gpt.py"), str(copy)],
                         env={**os.environ, **tiny}, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [line.split(" | ") for line in run.stdout.splitlines() if line.startswith(("| 1_", "| 2_"))]
    assert [(r[0], r[1]) for r in rows] == [(f"| {n}", f"ITERATIONS=3 SEED={s}")
                                            for n in ("1_train_gpt", "2_same_code") for s in (1, 2)]
    assert all(r[2] == "3" and r[5] == "+0.00000 |" for r in rows), run.stdout
    assert rows[0][4] != rows[1][4]  # the seeds differ, so the scores do
