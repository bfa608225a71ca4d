"""Times one block's MLP half (x + s * proj(relu(fc(rms_norm(x)))^2)) forward + backward at the training shape,
compiled as train_gpt compiles its blocks, with relu^2 differentiated two ways:
  autograd   torch's own derivative: inductor decides what the forward keeps and the backward recomputes
  saves_r    a Function that keeps only r = relu(h)^2, which proj's weight gradient needs anyway, and takes
             relu(h) = sqrt(r) in the backward: h need not be kept nor r recomputed
  fused      train_gpt's ReluSquaredMLP, what its MLP runs in training: the two [tokens, mult * dim] products are
             Triton matmuls with relu^2 in the forward's epilogue and dh = dr * 2 sqrt(r) in the backward's, so
             neither h nor dr goes through memory (the other four products stay cuBLAS)
Prints ms per call for each, alternating them so that none gains from its place, and each variant's largest
gradient difference to autograd's. Imports train_gpt: stage the wheels first (zstandard).

    python3 scripts/bench_relu2.py [--shape 48x2048] [--dim 512] [--mult 3] [--steps 50] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train_gpt as tg  # noqa: E402
from bench_step import cuda_ms  # noqa: E402


class Relu2SavesOutput(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h):
        r = F.relu(h).square()
        ctx.save_for_backward(r)
        return r

    @staticmethod
    def backward(ctx, grad):
        (r,) = ctx.saved_tensors
        return 2 * grad * r.sqrt()


RELU2 = {"autograd": lambda h: F.relu(h).square(), "saves_r": Relu2SavesOutput.apply}


def mlp_half(relu2):
    def forward(x, fc, proj, scale):
        xn = F.rms_norm(x, (x.size(-1),))
        if relu2 == "fused":
            y = tg.ReluSquaredMLP.apply(xn, fc.to(x.dtype), proj.to(x.dtype))
        else:
            y = F.linear(RELU2[relu2](F.linear(xn, fc.to(x.dtype))), proj.to(x.dtype))
        return x + scale.to(x.dtype) * y
    return torch.compile(forward, dynamic=False)


def step(fn, x, params, gy):
    for p in (x, *params):
        p.grad = None
    fn(x, *params).backward(gy)


def mlp_shape_cli() -> argparse.ArgumentParser:
    """The MLP-half shape and timing options, shared with bench_relu2_tma.py."""
    cli = argparse.ArgumentParser()
    cli.add_argument("--shape", default="48x2048")
    cli.add_argument("--dim", type=int, default=512)
    cli.add_argument("--mult", type=int, default=3)
    cli.add_argument("--steps", type=int, default=50)
    return cli


def main():
    cli = mlp_shape_cli()
    cli.add_argument("--rounds", type=int, default=3)
    a = cli.parse_args()
    B, T = map(int, a.shape.split("x"))
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(B, T, a.dim, device="cuda", generator=gen).bfloat16().requires_grad_()
    hidden = a.mult * a.dim
    params = [(torch.randn(hidden, a.dim, device="cuda", generator=gen) * a.dim ** -0.5).requires_grad_(),
              (torch.randn(a.dim, hidden, device="cuda", generator=gen) * hidden ** -0.5).requires_grad_(),
              torch.ones(a.dim, device="cuda", requires_grad=True)]
    gy = torch.randn(B, T, a.dim, device="cuda", generator=gen).bfloat16()
    names = [*RELU2, "fused"]
    fns, grads, times = {k: mlp_half(k) for k in names}, {}, {k: [] for k in names}
    for name, fn in fns.items():
        step(fn, x, params, gy)  # compiles
        step(fn, x, params, gy)
        grads[name] = [p.grad.float() for p in (x, *params)]
    for _ in range(a.rounds):
        for name, fn in fns.items():
            torch.cuda.reset_peak_memory_stats()
            times[name].append(cuda_ms(lambda: step(fn, x, params, gy), a.steps))
            peak = torch.cuda.max_memory_allocated() / 2**30
            print(f"measured {name}: {times[name][-1]:.3f} ms, peak {peak:.2f} GiB", flush=True)
    print(f"\nshape {B}x{T}, dim {a.dim}, hidden {a.mult * a.dim}")
    print(f"{'relu2':<10}{'best ms':>9}{'median ms':>11}{'grad diff':>11}")
    for name, ms in times.items():
        diff = max(((g - ref).norm() / ref.norm()).item() for g, ref in zip(grads[name], grads["autograd"]))
        print(f"{name:<10}{min(ms):>9.3f}{sorted(ms)[len(ms) // 2]:>11.3f}{diff:>11.2e}")


if __name__ == "__main__":
    main()
