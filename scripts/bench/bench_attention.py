"""Times one attention layer's forward and backward at the training shape: train_gpt.py's flex attention over its
document block mask, against alternatives that compute the same thing.

    python3 scripts/bench/bench_attention.py [--code train_gpt.py] [--rounds 6] [--calls 20]
        [--flex-options '{"num_warps": 8}' ...]

The contenders, all on the same random batch (a BOS every ~700 tokens, as bench_step.py's):
  flex      train_gpt's compiled flex attention with its block mask ([B, H, T, D] inputs, GQA).
  flex+OPT  the same with flex's kernel_options OPT (a JSON object, repeatable --flex-options).
  varlen    torch.nn.attention.varlen (Flash Attention 2, packed [B*T, H, D]), each document its own sequence: its
            starts from torch.nonzero_static at a fixed count (no host sync), the unused entries empty sequences.
Before timing, each contender's output and input gradients are compared with flex's (max |difference| over max
|value|). Then R rounds of N calls of forward + backward each, in turns, every other round in reverse order; it
prints each one's median ms a call, its median difference to flex within a round and in how many rounds it was
faster. A model on Flash Attention would build the document starts once a forward, for both attention layers;
their cost is printed on its own line.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
from scripts.bench.bench_step import random_batch  # noqa: E402
from scripts.common import code_option, cuda_ms, load_module, paired_summary, turn_order  # noqa: E402


def opens_sequence(ids: torch.Tensor, bos: int) -> torch.Tensor:
    """Where a packed sequence starts: every row's first token and every BOS."""
    starts = ids == bos
    starts[:, 0] = True
    return starts


def doc_starts(ids: torch.Tensor, bos: int, cap: int) -> torch.Tensor:
    """cu_seqlens of the packed batch, padded to cap + 1 entries with B*T (empty sequences), so its shape never
    depends on the data."""
    n = ids.numel()
    idx = torch.nonzero_static(opens_sequence(ids, bos).flatten(), size=cap, fill_value=n).flatten()
    return torch.cat([idx, idx.new_full((1,), n)]).int()


def varlen_fn(B, T, Hq, Hkv, D):
    from torch.nn.attention.varlen import varlen_attn
    params = inspect.signature(varlen_attn).parameters
    causal = {"is_causal": True} if "is_causal" in params else {"window_size": (-1, 0)}
    gqa = {"enable_gqa": True} if "enable_gqa" in params else {}

    def attend(q, k, v, cu):
        q = q.transpose(1, 2).reshape(B * T, Hq, D)
        k, v = (t.transpose(1, 2).reshape(B * T, Hkv, D) for t in (k, v))
        if not gqa:
            k, v = (t.repeat_interleave(Hq // Hkv, dim=1) for t in (k, v))
        y = varlen_attn(q, k, v, cu, cu, T, T, **causal, **gqa)
        return y.view(B, T, Hq, D).transpose(1, 2)
    return attend, {**causal, **gqa}


def main():
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    code_option(cli)
    cli.add_argument("--batch", type=int, default=48)
    cli.add_argument("--seq", type=int, default=2048)
    cli.add_argument("--rounds", type=int, default=6)
    cli.add_argument("--calls", type=int, default=20)
    cli.add_argument("--caps", default="1024", help="comma-separated: most sequences varlen takes (rows, documents)")
    cli.add_argument("--flex-options", action="append", default=[], help="flex kernel_options as JSON (repeatable)")
    opt = cli.parse_args()
    tg = load_module(opt.code, "train_gpt_bench")
    args, device = tg.Hyperparameters(), torch.device("cuda")
    B, T, Hq, Hkv = opt.batch, opt.seq, args.num_heads, args.num_kv_heads
    D = args.model_dim // Hq
    gen = torch.Generator(device=device).manual_seed(0)
    ids = random_batch(B, T, args.vocab_size, device, gen, tg.BOS_ID)[0]
    doc = (ids == tg.BOS_ID).int().cumsum(1).int()
    mask = tg.attention_mask(B, T, args.swa_window, doc, device)
    caps = [int(c) for c in opt.caps.split(",")]
    cus = {cap: doc_starts(ids, tg.BOS_ID, cap) for cap in caps}
    n_seq = int(opens_sequence(ids, tg.BOS_ID).sum())
    if n_seq > min(caps):
        raise SystemExit(f"{n_seq} sequences overflow --caps {min(caps)}: raise it")
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    print(f"B {B} T {T} heads {Hq}/{Hkv} dim {D} window {args.swa_window}; {n_seq} sequences (rows + documents)")
    q = torch.randn(B, Hq, T, D, device=device, dtype=torch.bfloat16, requires_grad=True)
    k, v = (torch.randn(B, Hkv, T, D, device=device, dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
    dy = torch.randn(B, Hq, T, D, device=device, dtype=torch.bfloat16)

    contenders = {"flex": lambda: tg._flex_attention(q, k, v, block_mask=mask, enable_gqa=True)}
    for text in opt.flex_options:
        ko = json.loads(text)
        contenders[f"flex {text}"] = (lambda ko: lambda: tg._flex_attention(
            q, k, v, block_mask=mask, enable_gqa=True, kernel_options=ko))(ko)
    attend, how = varlen_fn(B, T, Hq, Hkv, D)
    for cap, cu in cus.items():
        contenders[f"varlen cap {cap} {how}"] = (lambda cu: lambda: attend(q, k, v, cu))(cu)

    def grads(fn):
        for t in (q, k, v):
            t.grad = None
        y = fn()
        y.backward(dy)
        return [y.detach().float()] + [t.grad.float() for t in (q, k, v)]

    ref = grads(contenders["flex"])
    for name, fn in contenders.items():
        errs = [((a - b).abs().max() / b.abs().max()).item() for a, b in zip(grads(fn), ref)]
        print(f"{name}: relative max |diff| to flex  y {errs[0]:.2e}  dq {errs[1]:.2e}  dk {errs[2]:.2e}  "
              f"dv {errs[3]:.2e}")

    def call(fn):
        return lambda: fn().backward(dy)
    names = list(contenders)
    times = [[] for _ in names]
    for _ in range(2):
        for fn in contenders.values():
            cuda_ms(call(fn), 3)
    for rnd in range(opt.rounds):
        for i in turn_order(rnd, len(names)):
            times[i].append(cuda_ms(call(contenders[names[i]]), opt.calls))
        print(f"round {rnd + 1}: " + "  ".join(f"{t[-1]:.3f}" for t in times))
    print(f"\nms a forward + backward, {opt.rounds} rounds of {opt.calls} calls in turns")
    summary = paired_summary(times)
    for name, (med, low, diff, faster) in zip(names, summary):
        print(f"{name:>48}: median {med:.3f}  min {low:.3f}  vs flex {diff:+.3f} ({med / summary[0][0]:.3f}x)  "
              f"faster in {faster}/{opt.rounds}")
    for cap in caps:
        ms = cuda_ms(lambda: doc_starts(ids, tg.BOS_ID, cap), 50)
        print(f"document starts, cap {cap} (once a forward): {ms:.3f} ms")


if __name__ == "__main__":
    main()
