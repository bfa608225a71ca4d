"""train_gpt's relu2_matmul (the MLP's matmuls with relu^2 in the epilogue) alone at the training shape, in both
directions the MLP uses it, against cuBLAS's plain product and against other tile configurations of the same
matmul written with tensor descriptors (Hopper TMA loads and stores): one tile per program (in the backward also
with r loaded before the K loop), or persistent (one program per SM walking the tiles, optionally with the tile
loop flattened into the K loop so the next tile's loads overlap this tile's epilogue, the store split in two
halves, r loaded early or by pointers). Prints ms, TFLOP/s and the error against torch's relu^2 of the bf16
product. Each configuration is a new compile; those that do not fit in shared memory are listed as failed. On
nvidia-h200 (session 16) the fastest were "pers BM128 BN256 BK64 w8 s4 FS" forward (0.243 ms, cuBLAS 0.239) and
"TMA BM128 BN128 BK64 w8 s3" backward (0.341, cuBLAS 0.226), against 0.324 / 0.389 for the pointer kernel before;
train_gpt runs those two since session 17 (0.240 / 0.338). In session 18 the R rows (r loaded before the K
loop) were slower: 0.380 against 0.335 for the same tiles.

    python3 scripts/bench_relu2_tma.py [--shape 48x2048] [--dim 512] [--mult 3] [--steps 50] [--quick]
        [--directions forward,backward] [--code train_gpt.py,.prev/other.py]

--code times the relu2_matmul of each listed version of train_gpt.py (a "train_gpt" row each, named by its path).

forward:  r = relu(x @ fc^T)^2            x [tokens, d],   fc [mult d, d]   (b given as [N, K])
backward: dh = (g @ proj) * 2 sqrt(r)     g [tokens, d],   proj [d, mult d] (b given as [K, N])
"""

from __future__ import annotations

from pathlib import Path

import torch
import unstaged  # noqa: F401  (before train_gpt: runs before the wheels are staged)
import triton
import triton.language as tl
from bench_relu2 import mlp_shape_cli
from bench_step import cuda_ms
from score_baseline import load_module
from train_gpt import tile_product  # the K loop of train_gpt's kernel: both study kernels run it
from triton.tools.tensor_descriptor import TensorDescriptor

TILES = [(128, 128, 64, 8, 3), (128, 128, 64, 8, 4), (128, 256, 64, 8, 3), (256, 128, 64, 8, 3),
         (128, 128, 64, 4, 4), (128, 256, 64, 8, 4)]
# the persistent kernel's options: (tile loop flattened, split store, r loaded before the K loop, r loaded by
# pointers into registers instead of through shared memory by TMA); r is read in the backward only
PERSISTENT = {"forward": [(False, False, False, False), (True, False, False, False), (True, True, False, False)],
              "backward": [(True, True, False, False), (True, False, False, True), (True, True, False, True),
                           (True, False, True, True), (True, True, True, True)]}


@triton.jit
def relu2_matmul_tma_kernel(a, b, r, out, N, K, BACKWARD: tl.constexpr, B_KN: tl.constexpr, BM: tl.constexpr,
                            BN: tl.constexpr, BK: tl.constexpr, R_EARLY: tl.constexpr):
    pid, n_tiles = tl.program_id(0), tl.cdiv(N, BN)
    m0, n0 = (pid // n_tiles) * BM, (pid % n_tiles) * BN
    if BACKWARD and R_EARLY:  # issued before the K loop, so that its latency hides behind the products
        rt = r.load([m0, n0])
    acc = tile_product(a, b, m0, n0, K, BM, BN, BK, B_KN)
    if BACKWARD:
        if not R_EARLY:
            rt = r.load([m0, n0])
        acc = acc * 2 * tl.sqrt(rt.to(tl.float32))
    else:
        acc = tl.maximum(acc, 0.0)
        acc = acc * acc
    out.store([m0, n0], acc.to(out.dtype))


@triton.jit
def relu2_matmul_persistent_kernel(a, b, r, out, M, N, K, BACKWARD: tl.constexpr, B_KN: tl.constexpr,
                                   BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, PROGRAMS: tl.constexpr,
                                   FLATTEN: tl.constexpr, SPLIT: tl.constexpr, R_EARLY: tl.constexpr,
                                   R_PTR: tl.constexpr):
    n_tiles = tl.cdiv(N, BN)
    done = tl.program_id(0) - PROGRAMS  # the epilogue's own tile counter, as in triton's persistent tutorial
    for tile in tl.range(tl.program_id(0), tl.cdiv(M, BM) * n_tiles, PROGRAMS, flatten=FLATTEN):
        m0, n0 = (tile // n_tiles) * BM, (tile % n_tiles) * BN
        if BACKWARD and R_EARLY:
            rt = load_r(r, m0, n0, M, N, BM, BN, R_PTR)
        acc = tile_product(a, b, m0, n0, K, BM, BN, BK, B_KN)
        done += PROGRAMS
        m0, n0 = (done // n_tiles) * BM, (done % n_tiles) * BN
        if BACKWARD:
            if not R_EARLY:
                rt = load_r(r, m0, n0, M, N, BM, BN, R_PTR)
            acc = acc * 2 * tl.sqrt(rt.to(tl.float32))
        else:
            acc = tl.maximum(acc, 0.0)
            acc = acc * acc
        if SPLIT:
            lo, hi = tl.split(tl.permute(tl.reshape(acc, (BM, 2, BN // 2)), (0, 2, 1)))
            out.store([m0, n0], lo.to(out.dtype))
            out.store([m0, n0 + BN // 2], hi.to(out.dtype))
        else:
            out.store([m0, n0], acc.to(out.dtype))


@triton.jit
def load_r(r, m0, n0, M, N, BM: tl.constexpr, BN: tl.constexpr, R_PTR: tl.constexpr):
    if R_PTR:  # one return: the JIT compiles the code after a return inside a constexpr branch too
        m, n = m0 + tl.arange(0, BM), n0 + tl.arange(0, BN)
        rt = tl.load(r + m[:, None] * N + n[None, :], mask=(m < M)[:, None] & (n < N)[None, :], other=0.0)
    else:
        rt = r.load([m0, n0])
    return rt


def descriptors(a, b, b_is_nk, r, out, bm, bn, bk, split=False, r_ptr=False):
    return (TensorDescriptor.from_tensor(a, [bm, bk]),
            TensorDescriptor.from_tensor(b, [bn, bk] if b_is_nk else [bk, bn]),
            r if r_ptr else TensorDescriptor.from_tensor(r, [bm, bn]),
            TensorDescriptor.from_tensor(out, [bm, bn // 2 if split else bn]))


def tma_launcher(a, b, b_is_nk, r, out, backward, cfg, r_early=False):
    bm, bn, bk, w, s = cfg
    N = b.size(0) if b_is_nk else b.size(1)
    descs = descriptors(a, b, b_is_nk, r, out, bm, bn, bk)
    grid = (triton.cdiv(a.size(0), bm) * triton.cdiv(N, bn),)
    return lambda: relu2_matmul_tma_kernel[grid](*descs, N, a.size(1), BACKWARD=backward, B_KN=not b_is_nk,
                                                 BM=bm, BN=bn, BK=bk, R_EARLY=r_early, num_warps=w, num_stages=s)


def persistent_launcher(a, b, b_is_nk, r, out, backward, cfg, flags):
    bm, bn, bk, w, s = cfg
    flatten, split, r_early, r_ptr = flags
    M, N = a.size(0), b.size(0) if b_is_nk else b.size(1)
    descs = descriptors(a, b, b_is_nk, r, out, bm, bn, bk, split, r_ptr)
    sms = torch.cuda.get_device_properties(a.device).multi_processor_count if a.is_cuda else 3  # CPU: interpreter
    programs = min(sms, triton.cdiv(M, bm) * triton.cdiv(N, bn))
    return lambda: relu2_matmul_persistent_kernel[(programs,)](
        *descs, M, N, a.size(1), BACKWARD=backward, B_KN=not b_is_nk, BM=bm, BN=bn, BK=bk, PROGRAMS=programs,
        FLATTEN=flatten, SPLIT=split, R_EARLY=r_early, R_PTR=r_ptr, num_warps=w, num_stages=s)


def train_gpt_launcher(module, a, b_kn, r, backward):
    return lambda: module.relu2_matmul(a, b_kn, r if backward else None)


def label(kind, cfg, flags=None):
    text = f"{kind} BM{cfg[0]} BN{cfg[1]} BK{cfg[2]} w{cfg[3]} s{cfg[4]}"
    if flags:
        text += " " + "".join(c for c, on in zip("FSRP", flags) if on) if any(flags) else " -"
    return text


def main():
    cli = mlp_shape_cli()
    cli.add_argument("--quick", action="store_true", help="the first tile configuration only (a smoke run)")
    cli.add_argument("--directions", default="forward,backward")
    cli.add_argument("--code", default=str(Path(__file__).resolve().parents[1] / "train_gpt.py"),
                     help="comma-separated versions of train_gpt.py whose relu2_matmul to time")
    opt = cli.parse_args()
    B, T = map(int, opt.shape.split("x"))
    M, d, h = B * T, opt.dim, opt.mult * opt.dim
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator(device=dev).manual_seed(0)
    dt = torch.bfloat16 if dev == "cuda" else torch.float32  # the interpreter has no bf16 constants
    x, g = (torch.randn(M, d, device=dev, generator=gen).to(dt) for _ in range(2))
    fc = (torch.randn(h, d, device=dev, generator=gen) * d ** -0.5).to(dt)
    proj = (torch.randn(d, h, device=dev, generator=gen) * h ** -0.5).to(dt)
    r = torch.relu(x @ fc.t()).square()
    out = torch.empty_like(r)
    flop = 2 * M * d * h
    tiles = TILES[:1] if opt.quick else TILES
    versions = [(code, load_module(code, f"train_gpt_v{i}")) for i, code in enumerate(opt.code.split(","))]
    rows = []
    for name, a, b, b_is_nk, backward in (("forward", x, fc, True, False), ("backward", g, proj, False, True)):
        if name not in opt.directions.split(","):
            continue
        bm = b.t() if b_is_nk else b
        want = (a @ bm) * 2 * r.sqrt() if backward else torch.relu(a @ bm).square()
        runs = [("cuBLAS a @ b (no epilogue)", lambda: a @ bm)]
        runs += [(f"train_gpt {code}"[:35], train_gpt_launcher(module, a, bm, r, backward))
                 for code, module in versions]
        runs += [(label("TMA", cfg) + (" R" if early else ""), tma_launcher(a, b, b_is_nk, r, out, backward, cfg,
                                                                            early))
                 for cfg in tiles for early in ((False, True) if backward else (False,))]
        runs += [(label("pers", cfg, flags), persistent_launcher(a, b, b_is_nk, r, out, backward, cfg, flags))
                 for cfg in tiles for flags in PERSISTENT[name]]
        for text, run in runs:
            out.zero_()
            try:
                res = run()
                if dev == "cuda":
                    torch.cuda.synchronize()
            except Exception as e:  # too much shared memory, or a compile error: listed, not timed
                rows.append((name, text, None, f"failed: {type(e).__name__}: {str(e)[:80]}"))
                print(f"{name} {text}: {rows[-1][3]}", flush=True)
                continue
            got = res if text.startswith(("cuBLAS", "train_gpt")) else out
            err = "" if text.startswith("cuBLAS") else \
                f"{((got.float() - want.float()).norm() / want.float().norm()).item():.1e}"
            ms = cuda_ms(run, opt.steps) if dev == "cuda" else float("nan")
            rows.append((name, text, ms, err))
            print(f"{name} {text}: {ms:.3f} ms {err}", flush=True)
    print(f"\nshape {opt.shape}, {M} x {d} @ {d} x {h}, {flop / 1e9:.0f} GFLOP per call; "
          "F = tile loop flattened, S = split store, R = r loaded before the K loop, P = r loaded by pointers")
    print(f"{'direction':<10}{'kernel':<36}{'ms':>8}{'TFLOP/s':>9}  rel. error")
    for name, text, ms, err in rows:
        ms_s, tf = ("-", "-") if ms is None else (f"{ms:.3f}", f"{flop / ms / 1e9:.0f}")
        print(f"{name:<10}{text:<36}{ms_s:>8}{tf:>9}  {err}")


if __name__ == "__main__":
    main()
