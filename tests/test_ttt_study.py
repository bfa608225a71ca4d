"""scripts/bench/ttt_study.py on a tiny packed model: the fixed score first, then each variant from fresh weights."""

import torch

import train_gpt
from conftest import TINY_MODEL, tiny_args, tiny_model
from scripts.bench import ttt_study


def test_each_variant_adapts_a_fresh_copy_and_is_compared_with_the_fixed_score(markov_data):
    args = tiny_args(markov_data, eval_stride=32, ttt_batch_seqs=4)
    blob = train_gpt.pack_artifact(dict(TINY_MODEL), {k + ":f": v.half() for k, v in tiny_model().state_dict().items()})
    val = train_gpt.load_val_tokens(args.val_files, 64)
    luts = tuple(torch.ones(64, dtype=t) for t in (torch.int64, torch.bool, torch.bool))
    variants = ["still: TTT_EPOCHS=1 TTT_LR=0", "moving: TTT_EPOCHS=2 TTT_LR=0.05",
                "still again: TTT_EPOCHS=1 TTT_LR=0"]
    rows = ttt_study.study(blob, args, variants, val, luts, torch.device("cpu"))
    assert [r["label"] for r in rows] == ["fixed (no adaptation)", "still", "moving", "still again"]
    fixed, still, moving, again = (r["bpb"] for r in rows)
    assert still == fixed == again  # each variant starts from the packed weights, not the last one's
    assert moving < fixed - 0.005
    text = ttt_study.table(rows)
    assert text.count("\n| ") == 4 and "| moving |" in text and "+0.00000" in text
