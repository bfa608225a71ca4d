"""Counts, without a GPU, the passes over token-sized tensors in one block's forward and backward graphs, for each
version given: a GDN block and an SWA block of the model the environment's settings describe (the full-size default:
~4 s a version on 2 CPU cores; each block given the previous block's pair where blocks take one), traced as
torch.compile hands them to inductor (AOT autograd's graphs, before fusion). A computing node whose output holds a
value a token (views and allocations not counted) is a pass over the activations unless inductor fuses it into a
neighbour; a sum over the tokens to a per-channel vector is a reduction kernel of its own in the profiles so far.
What inductor then fuses, only a GPU profile says.

    python3 scripts/bench/graph_passes.py --code train_gpt.py,.prev/other.py [--list]
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections import Counter
from pathlib import Path

import torch
from torch._functorch.aot_autograd import aot_module_simplified, make_boxed_func

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
from scripts.common import code_option, load_module  # noqa: E402

NOT_PASSES = {"getitem", "view", "_unsafe_view", "reshape", "t", "transpose", "permute", "expand", "slice",
              "select", "split", "split_with_sizes", "unbind", "unsqueeze", "squeeze", "alias", "detach",
              "as_strided", "empty", "empty_like", "empty_strided", "zeros", "full", "scalar_tensor", "clone"}
TOKENS = 2, 300  # B, T: 300 and 600 are no model width, so a token-sized tensor shows by its shape


def token_sized(node, B: int, T: int) -> bool:
    value = node.meta.get("val") if hasattr(node, "meta") else None
    return isinstance(value, torch.Tensor) and (T in value.shape or B * T in value.shape)


def op_name(node) -> str:
    name = str(node.target)
    return name.split(".")[1] if name.startswith("aten.") else getattr(node.target, "__name__", name)


def per_token(node, B: int, T: int) -> int:
    return node.meta["val"].numel() // (B * T)


def count_passes(fn, inputs: list, B: int, T: int) -> dict[str, dict[str, Counter]]:
    """For fn's compiled "forward" and "backward" graphs: "nodes", a Counter of the computing ops with token-sized
    outputs and of "sum over tokens" (a reduction from a token-sized input to a smaller output), and "values",
    the same keys weighted by the values a token each writes (a sum: reads)."""
    found = {graph: {"nodes": Counter(), "values": Counter()} for graph in ("forward", "backward")}

    def keep(graph):
        def compiler(gm, _):
            for node in gm.graph.nodes:
                if node.op != "call_function" or op_name(node) in NOT_PASSES:
                    continue
                big = [a for a in node.args if token_sized(a, B, T)]
                if token_sized(node, B, T):
                    key, width = op_name(node), per_token(node, B, T)
                elif big and "sum" in op_name(node):
                    key, width = "sum over tokens", per_token(big[0], B, T)
                else:
                    continue
                found[graph]["nodes"][key] += 1
                found[graph]["values"][key] += width
            return make_boxed_func(gm.forward)
        return compiler

    backend = lambda gm, ins: aot_module_simplified(gm, ins, fw_compiler=keep("forward"),  # noqa: E731
                                                     bw_compiler=keep("backward"))
    torch._dynamo.reset()
    outs = torch.compile(fn, backend=backend, dynamic=False)(*inputs)
    outs = outs if isinstance(outs, tuple) else (outs,)
    torch.autograd.backward(outs, [torch.randn_like(o) for o in outs])
    return found


def block_passes(code: str, version: int) -> dict[str, dict[str, Counter]]:
    """count_passes of the first GDN block and the first SWA block of the model train_gpt's settings describe."""
    tg = load_module(code, f"train_gpt_v{version}")
    torch.manual_seed(0)
    model = tg.GDNHybrid(tg.Hyperparameters().model_config())
    B, T = TOKENS
    ids = torch.randint(4, model.embed.num_embeddings, (B, T))
    ctx = model.context(ids)
    ctx["x0"] = model.embed_inputs(ids, ctx).detach()
    out = {}
    for kind in ("gdn", "swa"):
        block = model.blocks[model.layout.index(kind)]
        x, y = torch.randn(2, B, T, model.embed.embedding_dim).unbind(0)
        if "y" in inspect.signature(block.forward).parameters:  # it adds the previous block's MLP output itself
            fn, inputs = lambda x, y: block(x, ctx, block.mixer or model.attn, y), [x, y]
        else:
            fn, inputs = lambda x: block(x, ctx, block.mixer or model.attn), [x]
        out[kind] = count_passes(fn, [t.requires_grad_() for t in inputs], B, T)
    return out


def main(argv=None):
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    code_option(cli)
    cli.add_argument("--list", action="store_true", help="the ops behind each count")
    opt = cli.parse_args(argv)
    for version, code in enumerate(opt.code.split(",")):
        for kind, graphs in block_passes(code, version).items():
            cells = []
            for graph, found in graphs.items():
                nodes, values, s = found["nodes"], found["values"], "sum over tokens"
                cells.append(f"{graph} {nodes.total() - nodes[s]} token-sized outputs ({values.total() - values[s]:,} "
                             f"values a token), {nodes[s]} sums over tokens ({values[s]:,} values a token read)")
            print(f"{code}: {kind} block: " + "; ".join(cells))
            if opt.list:
                for graph, found in graphs.items():
                    print(f"  {graph}: " + ", ".join(f"{name} {n} ({found['values'][name]:,})"
                                                     for name, n in sorted(found["nodes"].items())))


if __name__ == "__main__":
    main()
