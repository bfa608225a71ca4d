"""Registers, shared memory and spills of train_gpt.py's Triton kernels (the relu^2 matmuls, the conv's three),
each compiled by Triton for Hopper (sm_90) exactly as train_gpt launches it at the training shape, how many of
its programs one SM holds, and its global loads in the PTX by width. Needs Triton with its NVIDIA backend (ptxas
ships with it), not a GPU: the launches are captured, not run.

    python3 scripts/bench/kernel_resources.py [--code train_gpt.py,.prev/train_gpt.py]

A program that holds more registers than 65,536 / (2 x its threads) leaves one program on an SM where the shared
memory would take two, and the SM has fewer warps to hide its loads behind. Loads narrower than 16 bytes where a
version had 16-byte ones can mean Triton could not prove a row's alignment (it knows an integer argument's
divisibility by 16 only, and a constexpr's exactly). The relu^2 kernels read by TMA copies, which are no such loads.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from unittest import mock

os.environ.pop("TRITON_INTERPRET", None)  # the interpreter compiles nothing
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
from scripts.common import code_option, load_module  # noqa: E402

REGS_PER_SM, SHARED_PER_SM, MAX_THREADS_PER_SM = 65_536, 233_472, 2048  # Hopper (H100, H200)


def captured_launches(tg, names: list[str], run) -> list[tuple[str, tuple, dict]]:
    """(kernel name, positional and keyword arguments) of every launch of the named kernels while run() runs."""
    calls = []
    with contextlib.ExitStack() as patches:
        for name in names:
            launcher = patches.enter_context(mock.patch.object(tg, name))
            launcher.__getitem__.return_value = lambda *args, _name=name, **kw: calls.append((_name, args, kw))
        run()
    return calls


def mlp_launches(tg, tokens: int, dim: int, hidden: int) -> list[tuple[str, tuple, dict]]:
    """relu2_matmul_kernel's forward and backward launches for one MLP at the training shape (bf16 inputs)."""
    bf16 = dict(dtype=torch.bfloat16)
    return captured_launches(tg, ["relu2_matmul_kernel"], lambda: (
        tg.relu2_matmul(torch.zeros(tokens, dim, **bf16), torch.zeros(hidden, dim, **bf16).t()),
        tg.relu2_matmul(torch.zeros(tokens, dim, **bf16), torch.zeros(dim, hidden, **bf16),
                        torch.zeros(tokens, hidden, **bf16))))


def conv_launches(tg, T: int, dim: int, heads: int, K: int) -> list[tuple[str, tuple, dict]]:
    """ConvQKV's kernel launches, forward and backward, for one sequence of the training length."""
    x = torch.zeros(1, T, 3 * dim, dtype=torch.bfloat16, requires_grad=True)
    w = torch.zeros(3 * dim, K, requires_grad=True)
    doc = torch.zeros(1, T, dtype=torch.int32)

    def run():
        outs = tg.ConvQKV.apply(x, w, doc, heads)
        torch.autograd.backward(outs, [torch.zeros_like(o) for o in outs])
    kernels = [name for name in vars(tg) if name.startswith("conv_") and name.endswith("_kernel")]  # a version's own
    return captured_launches(tg, kernels, run)


def compile_for_hopper(kernel, args: list, kw: dict):
    """The kernel compiled for sm_90 as Triton's launcher would compile it for these arguments: the same binder
    specialises them (constants, 16-byte alignment and divisibility hints), then the same compile call."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature
    target = GPUTarget("cuda", 90, 32)
    backend = make_backend(target)
    bound, specialization, options = create_function_from_signature(kernel.signature, kernel.params, backend)(
        *args, **kw)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kw, bound, specialization, options)
    return triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=target, options=options.__dict__)


def resources(compiled) -> dict:
    """Registers a thread, spilled and shared bytes a program (ptxas's record in the cubin), the programs an SM
    holds by each limit, and the PTX's global loads: 16 bytes wide and narrower."""
    threads = compiled.metadata.num_warps * 32
    usage = cubin_usage(compiled.asm["cubin"])
    regs, shared = usage["REG"], compiled.metadata.shared
    loads = [load_bytes(op) for op in re.findall(r"\bld\.global[.\w:]*", compiled.asm["ptx"])]
    return {"registers": regs, "spilled": usage["LOCAL"], "shared": shared, "threads": threads,
            "by_registers": REGS_PER_SM // (-(-regs // 8) * 8 * threads),  # allocated 8 a thread at a time
            "by_shared": SHARED_PER_SM // max(shared, 1), "by_threads": MAX_THREADS_PER_SM // threads,
            "wide_loads": sum(b >= 16 for b in loads), "narrow_loads": sum(b < 16 for b in loads)}


def load_bytes(op: str) -> int:
    """Bytes one thread reads in a PTX load such as ld.global.v4.b32 (16) or ld.global.b16 (2)."""
    vector = re.search(r"\.v(\d)\b", op)
    return (int(vector[1]) if vector else 1) * int(re.findall(r"\.[bfsu](\d+)\b", op)[-1]) // 8


def cubin_usage(cubin: bytes) -> dict[str, int]:
    """cuobjdump's resource usage line of the cubin's one kernel: REG, LOCAL (spill), SHARED, ... as numbers."""
    from triton.backends.nvidia import compiler
    tool = Path(compiler.__file__).parent / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([str(tool), "--dump-resource-usage", f.name], capture_output=True, text=True, check=True)
    return {key: int(value) for key, value in re.findall(r"\b([A-Z]+):(\d+)", out.stdout)}


def kernel_rows(code: str, name: str = "train_gpt_resources") -> list[dict]:
    """One row per launch: the MLP's two relu^2 products, then ConvQKV's launches."""
    tg = load_module(code, name)
    args = tg.Hyperparameters()
    dim, hidden, tokens = args.model_dim, args.mlp_mult * args.model_dim, args.micro_batch_seqs * args.train_seq_len
    launches = [(f"relu2 {'backward' if call[2]['BACKWARD'] else 'forward'}", *call)
                for call in mlp_launches(tg, tokens, dim, hidden)]
    for kernel, args_, kw in conv_launches(tg, args.train_seq_len, dim, args.num_heads, args.conv_size):
        names = getattr(tg, kernel).arg_names
        part = f", part {args_[names.index('part')]}" if "part" in names else ""
        launches.append((kernel + part, kernel, args_, kw))
    rows = []
    for label, kernel, launch_args, kw in launches:
        kernel_fn = getattr(tg, kernel)
        constants = {k: v for k, v in zip(kernel_fn.arg_names, launch_args) if k in ("BM", "BN", "BK", "BT")} | kw
        config = ", ".join(f"{k} {v}" for k, v in constants.items() if k in ("BM", "BN", "BK", "BT", "num_stages"))
        compiled = compile_for_hopper(kernel_fn, list(launch_args), dict(kw))
        rows.append({"code": code, "launch": label, "config": config, **resources(compiled)})
    return rows


def main(argv=None):
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    code_option(cli)
    opt = cli.parse_args(argv)
    try:
        import triton.backends.nvidia  # noqa: F401
    except ImportError:
        raise SystemExit("kernel_resources.py compiles for sm_90: it needs Triton with its NVIDIA backend")
    print("| code | launch | settings | warps | registers a thread | spilled B | shared B | programs an SM: "
          "by registers / shared / threads | global loads: 16 B / narrower |\n|---|---|---|---|---|---|---|---|---|")
    for i, code in enumerate(opt.code.split(",")):
        for r in kernel_rows(code, f"train_gpt_resources{i}"):
            print(f"| {os.path.relpath(r['code'])} | {r['launch']} | {r['config']} | {r['threads'] // 32} | "
                  f"{r['registers']} | {r['spilled']} | {r['shared']:,} | "
                  f"{r['by_registers']} / {r['by_shared']} / {r['by_threads']} | "
                  f"{r['wide_loads']} / {r['narrow_loads']} |", flush=True)


if __name__ == "__main__":
    main()
