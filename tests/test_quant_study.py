"""scripts/bench/quant_study.py on a tiny trained-looking model: every variant packs, reloads and is scored."""

import torch

import train_gpt
from conftest import tiny_args, tiny_model
from scripts.bench import quant_study


def test_every_variant_is_packed_reloaded_and_scored(markov_data, tokenizer):
    args = tiny_args(markov_data, eval_stride=32, vocab_size=64)
    model = tiny_model()
    val = train_gpt.load_val_tokens(args.val_files, args.vocab_size)[:600]
    luts = train_gpt.build_sentencepiece_luts(tokenizer, 64, torch.device("cpu"))
    rows = quant_study.study(args, model.state_dict(), val, luts, torch.device("cpu"), code_bytes=1000, embed=True)
    assert len(rows) == 1 + len(quant_study.variants(embed=True))
    float_row, by_label = rows[0], {r["label"]: r for r in rows[1:]}
    assert float_row["bytes"] is None and float_row["gap"] == 0
    # fewer bits, fewer bytes; the fp16 embedding costs bytes over int8
    assert by_label["gptq 4/4"]["bytes"] < by_label["gptq 6/6"]["bytes"]
    assert by_label["gptq 4/5, embed fp16"]["bytes"] > by_label["gptq 4/5"]["bytes"]
    assert all(r["total"] == r["bytes"] + 1000 and r["fits"] for r in rows[1:])
    assert all(abs(r["gap"]) < 0.5 for r in rows[1:])
    text = quant_study.table(rows, 1000)
    assert text.count("\n| ") == len(rows) + 1 and "gptq 4/5, embed int6" in text
