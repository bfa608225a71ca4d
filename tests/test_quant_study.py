"""scripts/bench/quant_study.py on a tiny model: every row is fitted, packed, reloaded from its bytes and scored."""

import pytest
import torch

import train_gpt
from conftest import ROOT, tiny_args, tiny_model
from scripts.bench import quant_study


def test_every_row_is_fitted_reloaded_and_scored(markov_data, tokenizer, tmp_path):
    cap = len((ROOT / "train_gpt.py").read_bytes()) + 60_000
    args = tiny_args(markov_data, eval_stride=32, vocab_size=64, artifact_cap_bytes=cap, fit_slack_bytes=3000)
    model = tiny_model()
    val = train_gpt.load_val_tokens(args.val_files, args.vocab_size)[:600]
    luts = train_gpt.build_sentencepiece_luts(tokenizer, 64, torch.device("cpu"))
    baseline = tmp_path / "other_train_gpt.py"
    baseline.write_bytes((ROOT / "train_gpt.py").read_bytes() + b"\n# another version\n")
    rows = quant_study.study(args, model.state_dict(), val, luts, torch.device("cpu"),
                             ["coarse mlp: QUANT_K_MLP=40"], str(baseline))
    labels = [r["label"] for r in rows]
    assert labels == ["float (exported weights)", "other_train_gpt.py (baseline)", "train_gpt.py as set", "coarse mlp"]
    float_row, by_label = rows[0], {r["label"]: r for r in rows[1:]}
    assert float_row["bytes"] is None and float_row["gap"] == 0
    code = cap - 60_000
    assert by_label["train_gpt.py as set"]["total"] == by_label["train_gpt.py as set"]["bytes"] + code
    baseline_row = by_label["other_train_gpt.py (baseline)"]
    assert baseline_row["total"] == baseline_row["bytes"] + code + len("\n# another version\n")
    assert all(cap - 3000 <= r["total"] <= cap and r["fits"] and abs(r["gap"]) < 0.5 for r in rows[1:])
    text = quant_study.table(rows)
    assert text.count("\n| ") == len(rows) and "| coarse mlp |" in text


def test_a_variant_naming_no_setting_is_refused():
    args = train_gpt.Hyperparameters()
    assert quant_study.parse_variant("a: QUANT_K_MLP=9", args)[1].quant_k_mlp == 9.0
    for bad in ("no colon QUANT_K_MLP=9", "typo: QUANT_K_MPL=9", "empty:"):
        with pytest.raises(SystemExit, match="expected 'LABEL: KEY=VALUE"):
            quant_study.parse_variant(bad, args)
