"""records/make_record.py: a record folder from good logs; refusals; the one-sided t-test."""

import hashlib
import json
import math
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "records"))
import make_record  # noqa: E402

CODE_SHA = hashlib.sha256((ROOT / "train_gpt.py").read_bytes()).hexdigest()


def fake_log(path, val_loss, sha=CODE_SHA, proof="match", total=15_900_000, finished=True, train_s=590.1,
             after_s=212.4, budget_line=True):
    lines = [f"run_id:s world_size:8 device:cuda:0 code_bytes:45000 code_sha256:{sha} val_tokens:62021846",
             f"byte_proof: lut_bytes:151080891 decoded_utf8_bytes:151080891 {proof}",
             f"stopping: wall-clock cap after 1850 steps, train_time:{train_s}s tokens:1,454,899,200",
             "pre_quant_ema val_loss:2.0 val_bpb:1.2000 tokens:62021845 bytes:151080891 eval_time:30.0s",
             f"artifact:final.ptz bytes:{total - 45000} code_bytes:45000", f"bytes_total:{total} margin:{16_000_000 - total}"]
    if finished:
        lines.append(f"final_quantized_zstd22_roundtrip val_loss:{val_loss:.8f} val_bpb:{val_loss / 1.7:.8f} "
                     "tokens:62021845 bytes:151080891 eval_time:40.0s")
    if budget_line:
        lines.append(f"time_budget: training:{train_s}s after_training:{after_s}s limit:600s each")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def args(logs, out, *extra):
    return [*logs, "--out", str(out), "--name", "GDN", "--author", "me", "--github-id", "me", "--blurb", "b", *extra]


def test_three_seeds_make_a_folder_with_stats(tmp_path):
    logs = [fake_log(tmp_path / f"seed{i}.txt", v) for i, v in enumerate((2.000, 2.002, 2.004))]
    out = tmp_path / "rec"
    assert make_record.main(args(logs, out, "--reference-val-loss", "2.05")) == 0
    sub = json.loads((out / "submission.json").read_text())
    assert sub["val_loss"] == pytest.approx(2.002) and sub["bytes_total"] == 15_900_000 and sub["seeds"] == 3
    assert sub["val_loss_std"] == pytest.approx(0.002) and sub["p_value"] < 0.01
    assert {p.name for p in out.iterdir()} >= {"README.md", "train_gpt.py", "requirements.txt", "seed0.txt"}
    assert "p = " in (out / "README.md").read_text() and "| 590.1 | 212.4 |" in (out / "README.md").read_text()


@pytest.mark.parametrize("damage, message", [
    (dict(sha="0" * 64), "not produced by the train_gpt.py"), (dict(proof="MISMATCH"), "byte_proof"),
    (dict(total=16_000_001), "over the 16,000,000-byte cap"), (dict(finished=False), "did not finish"),
    (dict(train_s=600.2), "training took 600.2s, over the challenge's 600 s"),
    (dict(after_s=601.0), "what followed it took 601.0s, over the challenge's 600 s"),
    (dict(budget_line=False), "no 'time_budget:' line")])
def test_bad_logs_are_refused_and_nothing_is_written(tmp_path, capsys, damage, message):
    logs = [fake_log(tmp_path / "a.txt", 2.0, **damage), fake_log(tmp_path / "b.txt", 2.0, **damage)]
    assert make_record.main(args(logs, tmp_path / "rec")) == 1
    assert message in capsys.readouterr().err and not (tmp_path / "rec").exists()


def test_logs_of_different_code_are_refused(tmp_path, capsys):
    logs = [fake_log(tmp_path / "a.txt", 2.0), fake_log(tmp_path / "b.txt", 2.0, sha="1" * 64)]
    assert make_record.main(args(logs, tmp_path / "rec")) == 1
    assert "different train_gpt.py versions" in capsys.readouterr().err


@pytest.mark.parametrize("t", [0.3, 1.0, 2.5, 7.0, -1.2])
def test_student_t_tail_matches_closed_forms(t):
    assert make_record.student_t_sf(t, 1) == pytest.approx(0.5 - math.atan(t) / math.pi, abs=1e-10)
    assert make_record.student_t_sf(t, 2) == pytest.approx(0.5 - t / (2 * math.sqrt(t * t + 2)), abs=1e-10)


def test_small_gain_is_not_significant():
    stats = make_record.significance([2.040, 2.046, 2.043], reference=2.05, min_gain=0.005)
    assert stats["p_value"] > 0.01
