"""Scores the challenge baseline's int8+zlib artifact with our evaluation: our byte LUT, our sliding
windows and stride, our exact sums. With this, a comparison separates model gains from evaluation gains.

    DATA_PATH=/tmp/proxy TOKENIZER_PATH=/tmp/proxy/tokenizer.model \
        python3 scripts/score_baseline.py .baseline/train_gpt.py .baseline/run/final_model.int8.ptz

The baseline is rebuilt from its own file (its Hyperparameters read the same environment it trained
with) and its own dequantizer. Windows are EVAL_SEQ_LEN long (default: its TRAIN_SEQ_LEN, 1024, since
its rotary positions never saw more) and EVAL_STRIDE (512) apart.
"""

from __future__ import annotations

import importlib.util
import io
import os
import sys
import types
import zlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train_gpt as tg  # noqa: E402


def load_baseline(path: str):
    spec = importlib.util.spec_from_file_location("baseline_train_gpt", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def baseline_logits(gpt: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """The baseline GPT's forward up to its soft-capped logits (its forward returns only the mean loss)."""
    x = F.rms_norm(gpt.tok_emb(ids), (gpt.tok_emb.embedding_dim,))
    x0, skips = x, []
    for i in range(gpt.num_encoder_layers):
        x = gpt.blocks[i](x, x0)
        skips.append(x)
    for i in range(gpt.num_decoder_layers):
        if skips:
            x = x + gpt.skip_weights[i].to(x.dtype)[None, None, :] * skips.pop()
        x = gpt.blocks[gpt.num_encoder_layers + i](x, x0)
    x = gpt.final_norm(x)
    logits = F.linear(x, gpt.tok_emb.weight) if gpt.tie_embeddings else gpt.lm_head(x)
    return gpt.logit_softcap * torch.tanh(logits / gpt.logit_softcap)


class PerTokenNLL(nn.Module):
    """Gives the baseline the interface train_gpt.evaluate scores: forward(ids, targets) -> NLL [B, T]."""

    def __init__(self, gpt: nn.Module):
        super().__init__()
        self.gpt = gpt

    def forward(self, ids, targets):
        logits = baseline_logits(self.gpt, ids).float()
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view_as(targets)


def rebuild(base, artifact: str, device) -> nn.Module:
    h = base.Hyperparameters()
    gpt = base.GPT(vocab_size=h.vocab_size, num_layers=h.num_layers, model_dim=h.model_dim, num_heads=h.num_heads,
                   num_kv_heads=h.num_kv_heads, mlp_mult=h.mlp_mult, tie_embeddings=h.tie_embeddings,
                   tied_embed_init_std=h.tied_embed_init_std, logit_softcap=h.logit_softcap, rope_base=h.rope_base,
                   qk_gain_init=h.qk_gain_init).to(device).bfloat16()
    for module in gpt.modules():  # the precisions the baseline trains and evaluates in
        if isinstance(module, base.CastedLinear):
            module.float()
    base.restore_low_dim_params_to_fp32(gpt)
    state = torch.load(io.BytesIO(zlib.decompress(Path(artifact).read_bytes())), map_location="cpu")
    gpt.load_state_dict(base.dequantize_state_dict_int8(state), strict=True)
    return gpt.eval()


def main(baseline_path: str, artifact: str):
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    base, ours = load_baseline(baseline_path), tg.Hyperparameters()
    gpt = rebuild(base, artifact, device)
    seq_len = int(os.environ.get("EVAL_SEQ_LEN", base.Hyperparameters().train_seq_len))
    args = types.SimpleNamespace(eval_seq_len=seq_len, eval_batch_seqs=ours.eval_batch_seqs)
    sp = tg.load_tokenizer(ours)
    tokens = tg.load_val_tokens(ours.val_files, ours.vocab_size)
    luts = tg.build_sentencepiece_luts(sp, ours.vocab_size, device)
    tg.prove_byte_count(sp, tokens, luts)
    model = PerTokenNLL(gpt)
    x = tokens[:seq_len + 1].to(device)
    with torch.inference_mode(), tg.autocast(device):  # the adapter must reproduce the baseline's own loss
        mine, theirs = model(x[None, :-1], x[None, 1:]).mean(), gpt(x[None, :-1], x[None, 1:])
    if not torch.allclose(mine.float(), theirs.float(), rtol=1e-2):
        raise AssertionError(f"adapter loss {mine.item():.5f} != baseline forward {theirs.item():.5f}")
    result = tg.evaluate(model, tokens, luts, args, device, ours.eval_stride)
    tg.report(f"baseline_ours_metric seq_len:{seq_len} stride:{ours.eval_stride}", result)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
