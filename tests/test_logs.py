"""The log readers (scripts/common.py and the scripts built on it) on hand-written lines in the formats of
train_gpt.py, the challenge baseline and its rescoring."""

import os
import re
import subprocess
import time

import numpy as np
import pytest

from conftest import ROOT
from scripts.bench import compare_table
from scripts.tools import step_pace, summarize_logs
from shards import write_shard

BASELINE = """train_batch_tokens:1000 train_seq_len:1024 iterations:20000
step:10/20000 val_loss:2.5000 val_bpb:1.5000 train_time:60000ms step_avg:6000.00ms
stopping_early: wallclock_cap train_time:60000ms step:10/20000
Serialized model int8+zlib: 900 bytes (payload:1 raw_torch:1 payload_ratio:1.00x)
final_int8_zlib_roundtrip_exact val_loss:2.51000000 val_bpb:1.51000000
"""
RESCORED = """baseline_ours_metric seq_len:1024 stride:1024 val_loss:2.51001000 val_bpb:1.51001000
baseline_ours_metric seq_len:1024 stride:512 val_loss:2.49000000 val_bpb:1.49000000
"""
OURS = """step:10/20 train_loss:2.9 lr_scale:1.000 train_time:30.0s step_avg:3000.0ms tok/s:1,300
step:20/20 train_loss:2.5 lr_scale:0.000 train_time:60.0s step_avg:3000.0ms tok/s:1,333
stopping: wall-clock cap after 20 steps, train_time:60.0s tokens:40,000
pre_quant val_loss:2.40000000 val_bpb:1.44000000
artifact:/tmp/a.ptz bytes:1234 code_bytes:50
final_quantized_zstd22_roundtrip val_loss:2.41000000 val_bpb:1.45000000 tokens:10 bytes:30 eval_time:1.5s
quant_gap_bpb:+0.01000
"""


def test_summary_takes_the_last_value_of_each_field_and_marks_the_missing(tmp_path):
    (tmp_path / "run.log").write_text(OURS)
    row = summarize_logs.summarize(str(tmp_path / "run.log"))
    assert row["steps"] == "20" and row["tok/s"] == "1,333" and row["train_s"] == "60.0"
    assert row["post_bpb"] == "1.45000000" and row["eval_s"] == "1.5" and row["gap"] == "+0.01000"
    assert row["total"] == "-" and row["peak_MiB"] == "-" and row["score_bpb"] == row["post_bpb"]


def test_an_adapted_score_is_the_runs_score_and_the_packed_files_own_stays_beside_it(tmp_path):
    (tmp_path / "run.log").write_text(OURS + "final_score_first_ttt val_loss:2.40000000 val_bpb:1.44400000 "
                                             "tokens:10 bytes:30 eval_time:4.0s\n")
    row = summarize_logs.summarize(str(tmp_path / "run.log"))
    assert row["post_bpb"] == "1.45000000" and row["score_bpb"] == "1.44400000" and row["eval_s"] == "4.0"


def test_table_puts_both_runs_on_one_metric(tmp_path, capsys):
    write_shard(tmp_path / "fineweb_train_000000.bin", np.zeros(20_000, dtype=np.int64))
    for name, text in (("b.log", BASELINE), ("m.log", RESCORED), ("o.log", OURS)):
        (tmp_path / name).write_text(text)
    compare_table.main(str(tmp_path), *(str(tmp_path / n) for n in ("b.log", "m.log", "o.log")))
    out = capsys.readouterr().out
    assert "10        10,000   0.50" in out and "20        40,000   2.00" in out
    assert "ours, seed 1337 - baseline, post-quantization, our metric: -0.04000 bpb" in out and "mean of" not in out
    assert "baseline's own val_loss 2.51000, ours over the same disjoint windows 2.51001" in out


def test_table_gives_each_seed_a_row_and_their_mean_against_the_baseline(tmp_path, capsys):
    write_shard(tmp_path / "fineweb_train_000000.bin", np.zeros(20_000, dtype=np.int64))
    adapted = OURS + "final_score_first_ttt val_loss:2.40000000 val_bpb:1.44000000 tokens:10 bytes:30 eval_time:4s\n"
    second = "env_overrides: RUN_ID=x SEED=1338\n" + OURS.replace("val_bpb:1.45000000", "val_bpb:1.46000000")
    for name, text in (("b.log", BASELINE), ("m.log", RESCORED), ("o1.log", adapted), ("o2.log", second)):
        (tmp_path / name).write_text(text)
    compare_table.main(str(tmp_path), *(str(tmp_path / n) for n in ("b.log", "m.log", "o1.log", "o2.log")))
    out = capsys.readouterr().out
    assert re.search(r"seed 1337 .* 1\.44000 +1\.44000 +1\.45000 ", out)  # the adapted score, then the fixed one
    assert "ours, seed 1337 - baseline, post-quantization, our metric: -0.05000 bpb" in out
    assert "ours, seed 1338 - baseline, post-quantization, our metric: -0.03000 bpb" in out
    assert "mean of 2 of ours - baseline: -0.04000 bpb" in out


def test_a_variant_gets_its_own_rows_mean_and_seed_by_seed_difference_to_the_defaults(tmp_path, capsys):
    write_shard(tmp_path / "fineweb_train_000000.bin", np.zeros(20_000, dtype=np.int64))
    runner = "env_overrides: DATA_PATH=/p MAX_WALLCLOCK_SECONDS=280 RUN_ID=r TRAIN_BATCH_TOKENS=98304"
    runs = {"d1": (runner, "1.45"), "d2": (runner + " SEED=1338", "1.46"),
            "v1": (runner + " MATRIX_LR=0.02", "1.44"), "v2": (runner + " MATRIX_LR=0.02 SEED=1338", "1.43"),
            "batch": ("env_overrides: TRAIN_BATCH_TOKENS=196608", "1.47")}
    for name, (overrides, bpb) in runs.items():
        (tmp_path / f"{name}.log").write_text(overrides + "\n" + OURS.replace("val_bpb:1.45000000", f"val_bpb:{bpb}"))
    for name, text in (("b.log", BASELINE), ("m.log", RESCORED)):
        (tmp_path / name).write_text(text)
    compare_table.main(str(tmp_path), *(str(tmp_path / f"{n}.log") for n in ("b", "m", *runs)))
    out = capsys.readouterr().out
    assert "ours MATRIX_LR=0.02, seed 1338 - baseline, post-quantization, our metric: -0.06000 bpb" in out
    assert "mean of 2 of ours - baseline: -0.03500 bpb" in out  # the defaults' seeds only
    assert "mean of 2 of ours MATRIX_LR=0.02 - baseline: -0.05500 bpb" in out
    assert "ours MATRIX_LR=0.02 - ours, seeds 1337, 1338: -0.01000, -0.03000 (mean -0.02000 bpb)" in out
    assert "ours TRAIN_BATCH_TOKENS=196608, seed 1337 - baseline" in out  # not the proxy's batch: a variant
    assert "TRAIN_BATCH_TOKENS=196608 - ours, seeds 1337: +0.02000 (mean +0.02000 bpb)" in out
    (tmp_path / "v1_again.log").write_text((tmp_path / "v1.log").read_text())
    with pytest.raises(SystemExit, match="two logs of ours MATRIX_LR=0.02, seed 1337"):
        compare_table.main(str(tmp_path), *(str(tmp_path / f"{n}.log") for n in ("b", "m", "v1", "v1_again")))


def test_compare_proxy_names_a_variants_log_after_its_settings(tmp_path):
    fake = tmp_path / "bin" / "python3"  # stands in for the training run: prints the run's name and settings
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "run $RUN_ID seed $SEED lr $MATRIX_LR"\n')
    fake.chmod(0o755)
    env = dict(os.environ, OUT=str(tmp_path), PATH=f"{fake.parent}:{os.environ['PATH']}")
    script = str(ROOT / "scripts" / "bench" / "compare_proxy.sh")
    run = subprocess.run(["bash", script, "ours", "SEED=1338", "MATRIX_LR=0.02"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    log = tmp_path / "cmp_ours_s1338_MATRIX_LR-0.02.log"
    assert log.read_text() == "run cmp_ours_s1338_MATRIX_LR-0.02 seed 1338 lr 0.02\n"


def test_an_unfinished_log_or_a_missing_proxy_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no fineweb_train_"):
        compare_table.train_tokens(str(tmp_path))
    with pytest.raises(ValueError, match="did the run finish"):
        compare_table.ours_row(OURS.replace("final_quantized", "x"))


def test_compare_proxy_tables_every_seed_in_the_folder_and_refuses_an_unknown_mode(tmp_path):
    write_shard(tmp_path / "fineweb_train_000000.bin", np.zeros(20_000, dtype=np.int64))
    second = "env_overrides: SEED=1338\n" + OURS.replace("val_bpb:1.45000000", "val_bpb:1.46000000")
    for name, text in (("cmp_baseline.log", BASELINE), ("cmp_baseline_ours_metric.log", RESCORED),
                       ("cmp_ours_s1337.log", OURS), ("cmp_ours_s1338.log", second)):
        (tmp_path / name).write_text(text)
    env = dict(os.environ, OUT=str(tmp_path), DATA=str(tmp_path))
    script = str(ROOT / "scripts" / "bench" / "compare_proxy.sh")
    run = subprocess.run(["bash", script, "table"], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "seed 1337 - baseline" in run.stdout and "seed 1338 - baseline" in run.stdout
    assert "mean of 2 of ours - baseline: -0.03500 bpb" in (tmp_path / "compare_table.txt").read_text()
    wrong = subprocess.run(["bash", script, "tabel"], env=env, capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2 and "usage: compare_proxy.sh all|baseline|ours|table" in wrong.stderr


def pace_log(ms_by_interval, start="train_start_unix:1000.0\n"):
    """A training log: five steps of 100 ms, then step lines 50 steps apart at these ms a step (a warm-down from
    the fourth), the times exact at the log's 0.1 s."""
    lines, t = [start], 0.0
    for step in range(1, 6):
        t += 0.1
        lines.append(f"step:{step}/900 train_loss:3.0 lr_scale:1.000 train_time:{t:.1f}s step_avg:1.0ms tok/s:1\n")
    for i, ms in enumerate(ms_by_interval):
        t += ms * (45 if i == 0 else 50) / 1000
        lines.append(f"step:{50 * (i + 1)}/900 train_loss:3.0 lr_scale:{1.0 if i < 3 else 0.5:.3f} "
                     f"train_time:{t:.1f}s step_avg:1.0ms tok/s:1\n")
    return "".join(lines)


def test_step_pace_finds_the_slow_stretches_and_what_they_cost():
    runs = step_pace.intervals(pace_log([100, 100, 100, 120, 112, 100, 100, 110]))
    assert len(runs) == 1 and [r[:2] for r in runs[0][:2]] == [(1, 50), (50, 100)]  # steps 2-5 too close
    found = step_pace.pace(runs[0], 0.05)
    assert found["median"] == pytest.approx(100) and (found["first"], found["last"]) == (1, 400)
    assert found["mean"] == pytest.approx((100 * 249 + 120 * 50 + 112 * 50 + 110 * 50) / 399)
    (a, b) = found["stretches"]
    assert (a["first"], a["last"], a["lr_first"]) == (150, 250, 0.5)  # two slow intervals merged
    assert a["lost_s"] == pytest.approx(1.0 + 0.6) and a["ms"] == pytest.approx(116)
    assert (b["first"], b["last"]) == (350, 400) and b["lost_s"] == pytest.approx(0.5)
    assert [(s["first"], s["last"]) for s in step_pace.pace(runs[0], 0.15)["stretches"]] == [(150, 200)]


def test_step_pace_gives_each_stretch_its_longest_step_where_the_log_has_them(capsys, tmp_path):
    """One interval holds a 712 ms step: a stall in a stretch of its own, against a usual longest of ~110 ms."""
    longest = {50: 105, 100: 110, 150: 712, 200: 108, 250: 111}  # the first five lines' steps: 102 ms
    lines = [re.sub(r"^step:(\d+)/(.*) tok/s:", lambda m: f"step:{m[1]}/{m[2]} step_max:"
                    f"{longest.get(int(m[1]), 102):.1f}ms tok/s:", line)
             for line in pace_log([100, 100, 112, 100, 100]).splitlines(keepends=True)]
    (tmp_path / "s.log").write_text("".join(lines))
    step_pace.main([str(tmp_path / "s.log")])
    out = capsys.readouterr().out
    assert "; an interval's longest step 110.0 ms (median)" in out, out
    assert "steps 100-150  112.0 ms a step  lr_scale 1.000-1.000  +0.6 s  longest step 712.0 ms" in out, out


def test_step_pace_reads_each_run_of_a_log_apart_and_lines_up_the_gpu_samples(tmp_path, capsys):
    text = pace_log([100, 100, 120, 100]) + pace_log([100] * 4, start="train_start_unix:2000.0\n")
    (tmp_path / "r.log").write_text(text)
    # the first run's slow interval (steps 100-150) spans train_time 10-16 s: the samples at 1011 and 1015
    samples = [(1005.0, 1980, 50, 400, "0x0"), (1011.0, 1500, 70, 700, "0x4"), (1015.0, 1600, 72, 690, "0x4"),
               (2005.0, 1980, 60, 500, "0x0")]
    (tmp_path / "r_gpu.csv").write_text("".join(", ".join(map(str, s)) + "\n" for s in samples))
    step_pace.main([str(tmp_path / "r.log")])
    out = capsys.readouterr().out
    assert "r.log run 1: steps 1-200 in 4 intervals, median 100.0 ms a step, mean 105.0; 1 stretches" in out
    assert "steps 100-150  120.0 ms a step  lr_scale 1.000-1.000  +1.0 s  SM 1550 MHz, up to 72 C, 695 W, " \
           "reasons 0x4 (2 samples)" in out
    assert "r.log run 2: steps 1-200 in 4 intervals, median 100.0 ms a step, mean 100.0; 0 stretches" in out
    assert "whole run: SM 1980 MHz, up to 60 C, 500 W, reasons 0x0 (1 samples)" in out  # run 2: its own clock
    (tmp_path / "r_gpu.csv").write_text("".join(", ".join(map(str, s)) + ", 700.00\n" for s in samples))
    step_pace.main([str(tmp_path / "r.log")])  # the sampler's newer files end with the board's power limit
    assert "+1.0 s  SM 1550 MHz, up to 72 C, 695 W of 700, reasons 0x4 (2 samples)" in capsys.readouterr().out
    (tmp_path / "r_gpu.csv").write_text("1001.0, [Not Supported], 50, 400, 0x0\n")
    with pytest.raises(SystemExit, match=r"r_gpu.csv:1: expected 'unix time, SM clock"):
        step_pace.main([str(tmp_path / "r.log")])
    (tmp_path / "other.log").write_text(OURS.replace("lr_scale", "lr"))
    (tmp_path / "other_gpu.csv").write_text("1001.0, 1980 MHz, 50, 400 W, 0x0\n")  # not read: no steps to line up
    step_pace.main([str(tmp_path / "other.log")])
    assert "other.log: no step lines with lr_scale and train_time" in capsys.readouterr().out


def test_proxy_train_samples_the_gpu_beside_the_log_and_stops_sampling_with_the_run(tmp_path):
    bin_ = tmp_path / "bin"  # a fake GPU tool, and a fake training run that lasts ~3 s
    bin_.mkdir()
    (bin_ / "nvidia-smi").write_text(  # answers each field the sampler asks for, in the order asked
        "#!/bin/sh\necho \"$*\" | sed -n 's/.*--query-gpu=\\([^ ]*\\).*/\\1/p' | sed 's/clocks.sm/1980/; "
        "s/temperature.gpu/55/; s/power.draw/512.3/; s/clocks_event_reasons.active/0x0000000000000000/; "
        "s/power.limit/700.00/; s/,/, /g'\n")
    (bin_ / "python3").write_text("#!/bin/sh\nsleep 3\necho step:1/1\n")
    for f in bin_.iterdir():
        f.chmod(0o755)
    env = dict(os.environ, OUT=str(tmp_path), RUN_ID="r", PATH=f"{bin_}:{os.environ['PATH']}")
    run = subprocess.run(["bash", str(ROOT / "scripts" / "tools" / "proxy_train.sh")], env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert f"GPU samples: {tmp_path}/r_gpu.csv" in run.stdout and (tmp_path / "r.log").read_text() == "step:1/1\n"
    samples = step_pace.gpu_samples(tmp_path / "r_gpu.csv")
    assert 1 <= len(samples) <= 3 and samples[0][1:] == (1980.0, 55.0, 512.3, "0x0000000000000000", 700.0)
    count = len(samples)
    time.sleep(2.5)  # the sampler was stopped with the run: nothing more is written
    assert len(step_pace.gpu_samples(tmp_path / "r_gpu.csv")) == count
