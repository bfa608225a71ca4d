"""Registers, shared memory and spills of train_gpt.py's relu^2 matmul kernels, each compiled by Triton for Hopper
(sm_90) exactly as `relu2_launch` launches it at the training shape, and how many of its programs one SM holds.
Needs Triton with its NVIDIA backend (ptxas ships with it), not a GPU: the launch is captured, not run.

    python3 scripts/bench/kernel_resources.py [--code train_gpt.py,.prev/train_gpt.py] [--slopes 0,0.5]

A program that holds more registers than 65,536 / (2 x its threads) leaves one program on an SM where the shared
memory would take two, and the SM has half the warps to hide its loads behind.
"""

from __future__ import annotations

import argparse
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
from scripts.common import load_module  # noqa: E402

REGS_PER_SM, SHARED_PER_SM, MAX_THREADS_PER_SM = 65_536, 233_472, 2048  # Hopper (H100, H200)


def captured_launch(tg, direction: str, slope: float, tokens: int, dim: int, hidden: int) -> tuple[list, dict]:
    """The positional and keyword arguments relu2_launch gives the kernel for one MLP product (bf16 inputs)."""
    calls = []
    launcher = mock.MagicMock()
    launcher.__getitem__.return_value = lambda *args, **kw: calls.append((args, kw))
    bf16 = dict(dtype=torch.bfloat16)
    with mock.patch.object(tg, "relu2_matmul_kernel", launcher):
        if direction == "forward":
            tg.relu2_matmul(torch.zeros(tokens, dim, **bf16), torch.zeros(hidden, dim, **bf16).t(), slope)
        else:
            signs = torch.zeros((tokens, hidden // 8) if slope else (0,), dtype=torch.uint8)
            tg.relu2_launch(torch.zeros(tokens, dim, **bf16), torch.zeros(dim, hidden, **bf16), slope,
                            torch.zeros(tokens, hidden, **bf16), signs)
    return calls[0]


def compile_for_hopper(kernel, args: list, kw: dict):
    """The kernel compiled for sm_90 with the captured arguments' types and constants."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import mangle_type
    options = {k: kw.pop(k) for k in ("num_warps", "num_stages") if k in kw}
    values = dict(zip(kernel.arg_names, args)) | kw
    constexprs = {name for name, p in zip(kernel.arg_names, kernel.params) if p.is_constexpr} | \
        {name for name, v in values.items() if v is None}
    signature = {name: "constexpr" if name in constexprs else mangle_type(v) for name, v in values.items()}
    consts = {(kernel.arg_names.index(name),): values[name] for name in constexprs}
    return triton.compile(ASTSource(kernel, signature, consts), target=GPUTarget("cuda", 90, 32), options=options)


def resources(compiled) -> dict:
    """Registers a thread, spilled and shared bytes a program (ptxas's record in the cubin), and the programs an
    SM holds by each limit."""
    threads = compiled.metadata.num_warps * 32
    usage = cubin_usage(compiled.asm["cubin"])
    regs, shared = usage["REG"], compiled.metadata.shared
    return {"registers": regs, "spilled": usage["LOCAL"], "shared": shared, "threads": threads,
            "by_registers": REGS_PER_SM // (-(-regs // 8) * 8 * threads),  # allocated 8 a thread at a time
            "by_shared": SHARED_PER_SM // max(shared, 1), "by_threads": MAX_THREADS_PER_SM // threads}


def cubin_usage(cubin: bytes) -> dict[str, int]:
    """cuobjdump's resource usage line of the cubin's one kernel: REG, LOCAL (spill), SHARED, ... as numbers."""
    from triton.backends.nvidia import compiler
    tool = Path(compiler.__file__).parent / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([str(tool), "--dump-resource-usage", f.name], capture_output=True, text=True, check=True)
    return {key: int(value) for key, value in re.findall(r"\b([A-Z]+):(\d+)", out.stdout)}


def kernel_rows(code: str, slopes: list[float], name: str = "train_gpt_resources") -> list[dict]:
    tg = load_module(code, name)
    args = tg.Hyperparameters()
    dim, hidden, tokens = args.model_dim, args.mlp_mult * args.model_dim, args.micro_batch_seqs * args.train_seq_len
    rows = []
    for slope in slopes:
        for direction in ("forward", "backward"):
            launch_args, kw = captured_launch(tg, direction, slope, tokens, dim, hidden)
            tiles = f"{kw['BM']}x{kw['BN']}x{kw['BK']}, {kw['num_stages']} stages, {kw['num_warps']} warps"
            compiled = compile_for_hopper(tg.relu2_matmul_kernel, list(launch_args), dict(kw))
            rows.append({"code": code, "direction": direction, "slope": slope, "tiles": tiles,
                         **resources(compiled)})
    return rows


def main(argv=None):
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--code", default="train_gpt.py", help="comma-separated train_gpt.py versions")
    cli.add_argument("--slopes", default="0,0.5", help="MLP_NEG_SLOPE values")
    opt = cli.parse_args(argv)
    try:
        import triton.backends.nvidia  # noqa: F401
    except ImportError:
        raise SystemExit("kernel_resources.py compiles for sm_90: it needs Triton with its NVIDIA backend")
    slopes = [float(s) for s in opt.slopes.split(",")]
    print("| code | product | slope | tiles | registers a thread | spilled B | shared B | programs an SM: "
          "by registers / shared / threads |\n|---|---|---|---|---|---|---|---|")
    for i, code in enumerate(opt.code.split(",")):
        for r in kernel_rows(code, slopes, f"train_gpt_resources{i}"):
            print(f"| {r['code']} | {r['direction']} | {r['slope']:g} | {r['tiles']} | {r['registers']} | "
                  f"{'-' if r['spilled'] is None else r['spilled']} | {r['shared']:,} | "
                  f"{r['by_registers']} / {r['by_shared']} / {r['by_threads']} |", flush=True)


if __name__ == "__main__":
    main()
