"""Scores the challenge baseline's int8+zlib artifact with our evaluation: our byte LUT, our sliding
windows and stride, our exact sums. With this, a comparison separates model gains from evaluation gains.

    DATA_PATH=/tmp/proxy TOKENIZER_PATH=/tmp/proxy/tokenizer.model \
        python3 scripts/bench/score_baseline.py .baseline/train_gpt.py .baseline/run/final_model.int8.ptz [BASELINE_LOG]

The baseline is rebuilt from its own file (its Hyperparameters read the same environment it trained
with) and its own dequantizer, and runs as it trains and scores: torch.compile'd, flash attention only.
(Eager scored 3.09 nats on disjoint windows where its own compiled evaluation gave 2.38; its bf16 rotary
tables, computed eagerly, are off by up to 3.5 radians at late positions.) Windows are EVAL_SEQ_LEN long
(default: its TRAIN_SEQ_LEN, 1024, since its rotary positions never saw more). Two lines: stride = the
window (disjoint windows), and EVAL_STRIDE (512), our metric. Given the baseline's log, the disjoint
score must reproduce its own final val_loss within 2e-3 nats, else this adapter is wrong and the script
fails.
"""

from __future__ import annotations

import io
import os
import sys
import types
import zlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
import train_gpt as tg  # noqa: E402
from scripts.common import BASELINE, find, load_module  # noqa: E402


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


def own_val_loss(log_path: str) -> float:
    found = find(BASELINE["val_loss"], Path(log_path).read_text())
    if found is None:
        raise ValueError(f"{log_path}: no final_int8_zlib_roundtrip_exact line; did the baseline run finish?")
    return float(found)


def main(baseline_path: str, artifact: str, log_path: str | None = None):
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for backend in ("cudnn", "mem_efficient", "math"):  # as the baseline's main() sets them
        getattr(torch.backends.cuda, f"enable_{backend}_sdp")(not torch.cuda.is_available())
    base, ours = load_module(baseline_path, "baseline_train_gpt"), tg.Hyperparameters()
    gpt = rebuild(base, artifact, device)
    seq_len = int(os.environ.get("EVAL_SEQ_LEN", base.Hyperparameters().train_seq_len))
    args = types.SimpleNamespace(eval_seq_len=seq_len, eval_batch_seqs=ours.eval_batch_seqs)
    tg.start_logging()
    tokens, luts = tg.load_eval_data(ours, device, prove=True)
    model = PerTokenNLL(gpt)
    if device.type == "cuda":
        model = torch.compile(model, dynamic=False, fullgraph=True)
    for stride in (seq_len, ours.eval_stride):
        result = tg.evaluate(model, tokens, luts, args, stride)
        tg.report(f"baseline_ours_metric seq_len:{seq_len} stride:{stride}", result)
        if stride == seq_len and log_path:
            own = own_val_loss(log_path)
            if abs(result["val_loss"] - own) > 2e-3:
                raise AssertionError(f"disjoint windows give val_loss {result['val_loss']:.5f} but the baseline's "
                                     f"own evaluation gave {own:.5f}: this adapter does not reproduce its model")


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    main(*sys.argv[1:])
