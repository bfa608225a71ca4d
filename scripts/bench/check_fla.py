"""GPU check: fla's chunk_gated_delta_rule against train_gpt's PyTorch reference and a float64 recurrence.

  python3 scripts/bench/check_fla.py           (on a CUDA machine with fla-core installed)

Compares the forward output and the gradients of q, k, v, g and beta, with and without document resets,
at the training shape (bf16, B=48, T=2048, train_gpt's default heads and head dim) and against float64
at B=1, T=256. Prints a table; exits non-zero if any relative error exceeds the bf16 tolerance.

fla dispatches to FlashQLA's fused TileLang kernels when the flash_qla package is importable (heads of 128);
FLA_FLASH_QLA=0 keeps fla's own kernels. The log names the backend that ran. TileLang compiles each of its
kernels per tile configuration on first use (15-40 s each): a FlashQLA run spends minutes compiling first.
"""

import logging
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
import train_gpt  # noqa: E402
from scripts.common import recurrence_fp64  # noqa: E402

logging.basicConfig(format="%(name)s: %(message)s")
logging.getLogger("fla.backends").setLevel(logging.INFO)  # fla names the backend it dispatches to (FLA_FLASH_QLA)
TOLERANCE = 2e-2  # bf16 inputs and kernels against float references
H = train_gpt.Hyperparameters.num_heads
D = train_gpt.Hyperparameters.model_dim // H


def inputs(B, T, H, K, resets, seed):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    r = lambda *s: torch.randn(*s, device="cuda", generator=gen)  # noqa: E731
    q, k, v = F.normalize(r(B, T, H, K), dim=-1), F.normalize(r(B, T, H, K), dim=-1), r(B, T, H, K)
    g = F.logsigmoid(r(B, T, H) + 3)  # typical decays: most near 1
    beta = torch.sigmoid(r(B, T, H))
    if resets:
        g[:, torch.randint(0, T, (T // 300 + 1,), generator=gen, device="cuda")] += train_gpt.DOC_RESET_GATE
    return [t.requires_grad_() for t in (q, k, v, g, beta)]


def run(fn, xs, dout):
    out = fn(*xs)
    grads = torch.autograd.grad(out, xs, dout)
    return [out.float()] + [gr.float() for gr in grads]


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def main():
    assert train_gpt.chunk_gated_delta_rule is not None, "fla is not importable"
    names = ["out", "dq", "dk", "dv", "dg", "dbeta"]
    rows, worst = [], 0.0
    # B=48 is the training batch; FlashQLA picks its tile width by B x heads and runs B=1 through its CP path
    for B, T, ref_name in ((48, 2048, "torch-chunked-fp32"), (1, 256, "fp64-recurrence")):
        for resets in (False, True):
            xs = inputs(B, T, H, D, resets, seed=T + resets)
            dout = torch.randn(B, T, H, D, device="cuda")
            fla_in = [x.detach().to(torch.float32 if i == 3 else torch.bfloat16).requires_grad_()
                      for i, x in enumerate(xs)]  # as the model calls it: bf16, log-decay g in fp32
            got = run(lambda *a: train_gpt.gated_delta_rule(*a), fla_in, dout.bfloat16())
            if ref_name == "fp64-recurrence":
                ref = run(lambda *a: recurrence_fp64(*a, D ** -0.5), [x.detach().double().requires_grad_()
                                                                       for x in xs], dout.double())
            else:
                ref = run(lambda *a: train_gpt.gated_delta_rule_ref(*a, D ** -0.5), xs, dout)
            errs = [rel(a, b) for a, b in zip(got, ref)]
            worst = max(worst, *errs)
            rows.append((f"B={B} T={T} resets={resets}", ref_name, errs))
    xs = [x.detach().bfloat16().requires_grad_() for x in inputs(48, 2048, H, D, True, 0)]
    xs[3] = xs[3].float().detach().requires_grad_()
    dout = torch.randn(48, 2048, H, D, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        run(train_gpt.gated_delta_rule, xs, dout)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(10):
        run(train_gpt.gated_delta_rule, xs, dout)
    torch.cuda.synchronize()
    ms = (time.perf_counter() - t) * 100
    print(f"\n{'case':28} {'reference':20} " + " ".join(f"{n:>8}" for n in names))
    for case, ref_name, errs in rows:
        print(f"{case:28} {ref_name:20} " + " ".join(f"{e:8.1e}" for e in errs))
    print(f"fla chunk_gated_delta_rule fwd+bwd, B=48 T=2048 H={H} D={D} bf16: {ms:.2f} ms")
    print(f"worst relative error {worst:.2e} (tolerance {TOLERANCE:.0e}): {'PASS' if worst < TOLERANCE else 'FAIL'}")
    sys.exit(0 if worst < TOLERANCE else 1)


if __name__ == "__main__":
    main()
