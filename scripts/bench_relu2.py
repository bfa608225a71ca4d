"""Times one block's MLP half (x + s * proj(relu(fc(rms_norm(x)))^2)) forward + backward at the training shape,
compiled as train_gpt compiles its blocks, with relu^2 differentiated two ways:
  autograd   torch's own derivative: inductor decides what the forward keeps and the backward recomputes
  saves_r    a Function that keeps only r = relu(h)^2, which proj's weight gradient needs anyway, and takes
             relu(h) = sqrt(r) in the backward: h need not be kept nor r recomputed
Prints ms per call for each, alternating them so that neither gains from going second, and the largest
gradient difference between the two. Pure torch: runs on the lent GPU machine without staging fla.

    python3 scripts/bench_relu2.py [--shape 48x2048] [--dim 512] [--mult 3] [--steps 50] [--rounds 3]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F


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
        h = F.linear(F.rms_norm(x, (x.size(-1),)), fc.to(x.dtype))
        return x + scale.to(x.dtype) * F.linear(relu2(h), proj.to(x.dtype))
    return torch.compile(forward, dynamic=False)


def step(fn, x, params, gy):
    for p in (x, *params):
        p.grad = None
    fn(x, *params).backward(gy)


def cuda_ms(fn, n):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(n):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / n


def main():
    cli = argparse.ArgumentParser()
    cli.add_argument("--shape", default="48x2048")
    cli.add_argument("--dim", type=int, default=512)
    cli.add_argument("--mult", type=int, default=3)
    cli.add_argument("--steps", type=int, default=50)
    cli.add_argument("--rounds", type=int, default=3)
    a = cli.parse_args()
    B, T = map(int, a.shape.split("x"))
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(B, T, a.dim, device="cuda", generator=gen).bfloat16().requires_grad_()
    params = [(torch.randn(a.mult * a.dim, a.dim, device="cuda", generator=gen) * a.dim ** -0.5).requires_grad_(),
              (torch.randn(a.dim, a.mult * a.dim, device="cuda", generator=gen) * (a.mult * a.dim) ** -0.5).requires_grad_(),
              torch.ones(a.dim, device="cuda", requires_grad=True)]
    gy = torch.randn(B, T, a.dim, device="cuda", generator=gen).bfloat16()
    fns, grads, times = {k: mlp_half(f) for k, f in RELU2.items()}, {}, {k: [] for k in RELU2}
    for name, fn in fns.items():
        step(fn, x, params, gy)  # compiles
        step(fn, x, params, gy)
        grads[name] = [p.grad.float() for p in (x, *params)]
    for _ in range(a.rounds):
        for name, fn in fns.items():
            torch.cuda.reset_peak_memory_stats()
            times[name].append(cuda_ms(lambda: step(fn, x, params, gy), a.steps))
            print(f"measured {name}: {times[name][-1]:.3f} ms, peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB",
                  flush=True)
    diff = max(((ga - gb).norm() / gb.norm()).item() for ga, gb in zip(grads["saves_r"], grads["autograd"]))
    print(f"\nshape {B}x{T}, dim {a.dim}, hidden {a.mult * a.dim}; largest relative gradient difference {diff:.2e}")
    print(f"{'relu2':<10}{'best ms':>9}{'median ms':>11}")
    for name, ms in times.items():
        print(f"{name:<10}{min(ms):>9.3f}{sorted(ms)[len(ms) // 2]:>11.3f}")


if __name__ == "__main__":
    main()
