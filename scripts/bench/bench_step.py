"""Times train_gpt.py's training step on one GPU, then breaks it into parts.

    python3 scripts/bench/bench_step.py [--variants eager,mlp,train] [--shapes 48x2048,24x2048] [--steps 10]
        [--code train_gpt.py,.prev/train_gpt.py]

--code times other versions of the script side by side (e.g. `git show HEAD~1:train_gpt.py >
.prev/train_gpt.py`; `.prev/` is ignored by git); the breakdown is of the first.
--rounds R instead builds each distinct --code version's --variants (default 'train') once (first shape), warms
them up, then times them in turns, R rounds of --steps steps, every other round in reverse order: drift of the
machine (clocks, neighbours) then falls on every version alike, where one version after another read up to 10 ms
apart for the same code. It prints each one's median and minimum, its median round-by-round difference to the
first, and in how many rounds it was faster. `--variants train,loop --rounds R` is the loop's cost beyond the
step in turns; each loop round is a fresh train() call on the same model (new loader and optimizer state, its
compile warm-up untimed), so the start-up of its first steps falls in every round: give it enough --steps
(100 or more) that this weighs as little as it does over a real run.
--profile N runs the profiler over N whole steps of that first version and prints the GPU time per
step of each kernel family and of the --top heaviest kernels, and the GPU's idle time between kernels with the
kernels it waited for longest (a wait before a kernel is host work not yet done): what the isolated part
timings cannot show. --who K adds, for the K heaviest, the ops that launched them, with their input shapes.

A variant says what is torch.compile'd (fla's kernels always run eagerly): nothing, each block's MLP,
or what train_gpt.build_model compiles for training ('train': each whole block, and in newer versions
the head with its loss), or 'autotune': 'train' with the blocks compiled in inductor's max-autotune mode,
which may pick Triton matmul templates that take the relu^2, norms and residual adds into their epilogues
(minutes of autotuning in the warm-up). A step is what train() does per optimizer step at accumulation 1: forward,
backward, Muon + Adam, EMA. Tokens are random with a BOS every ~700 tokens, so document resets
and masks do real work. Variant 'loop' instead runs that version's own train() at accumulation 1 on the
shards under DATA_PATH: its loader, its per-step clock and checks included, timed by train() itself.
'loop' minus 'train' is what the training loop costs beyond the step.

Model FLOPs per token (training = 3 x forward):
  matrices: 6 x (projection weights used per token, the shared attention counted twice, + the tied head)
  attention: 3 x 4 x d x W per attention layer, W = mean number of keys a query sees (causal, within SWA_WINDOW)
  GDN recurrence: 3 x H x (4 K V + 2 C (K + V)) per GDN layer, chunk C = 64 (state read + update,
  and the intra-chunk products of the chunked form)
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
from scripts.common import code_option, cuda_ms, load_module, paired_summary, turn_order  # noqa: E402

H100_BF16_DENSE_TFLOPS = 989.4


def random_batch(B, T, vocab, device, gen, bos):
    ids = torch.randint(2, vocab, (B, T + 1), device=device, generator=gen)
    ids[torch.rand(B, T + 1, device=device, generator=gen) < 1 / 700] = bos
    ids[:, 0] = bos
    return ids[:, :-1], ids[:, 1:]


class RandomLoader:
    def __init__(self, B, T, vocab, device, bos):
        self.gen = torch.Generator(device=device).manual_seed(0)
        self.batches = [random_batch(B, T, vocab, device, self.gen, bos) for _ in range(4)]
        self.i = 0

    def next_batch(self):
        self.i += 1
        return self.batches[self.i % len(self.batches)]


def flops_per_token(tg, model, args, T):
    linear = lambda m: sum(x.weight.numel() for x in m.modules() if isinstance(x, tg.CastedLinear))  # noqa: E731
    matrices = linear(model.blocks) + 2 * linear(model.attn) + args.vocab_size * args.model_dim
    W = sum(min(t + 1, args.swa_window) for t in range(T)) / T
    H, K, C = args.num_heads, args.model_dim // args.num_heads, 64
    n_gdn = model.layout.count("gdn")
    return 6 * matrices + 2 * 3 * 4 * args.model_dim * W + n_gdn * 3 * H * (4 * K * K + 2 * C * 2 * K)


def build(tg, args, variant, device):
    torch.manual_seed(0)
    if variant in ("train", "autotune"):
        model = tg.build_model(args, device)
        if variant == "autotune":
            for block in model.blocks:
                block.compile(mode="max-autotune-no-cudagraphs")
        return model
    model = tg.GDNHybrid({**args.model_config(), "tied_embed_init_std": args.tied_embed_init_std}).to(device)
    for block in model.blocks:
        if variant == "mlp":
            block.mlp.compile()
    return model


def step_fn(tg, model, opts, ema, loader, device):
    def step():
        tg.train_step(model, loader, 1, device)
        for opt in opts:
            opt.step()
            opt.zero_grad(set_to_none=True)
        ema.update(model)
    return step


def bench_step(tg, args, variant, B, T, steps, device):
    model = build(tg, args, variant, device)
    opts, ema = tg.build_optimizers(model, args), tg.EMA(model, args.ema_decay)
    step = step_fn(tg, model, opts, ema, RandomLoader(B, T, args.vocab_size, device, tg.BOS_ID), device)
    t = time.perf_counter()
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    warm = time.perf_counter() - t
    torch.cuda.reset_peak_memory_stats()
    ms = cuda_ms(step, steps)
    return model, opts, ema, {"ms": ms, "warmup_s": warm, "peak_gib": torch.cuda.max_memory_allocated() / 2**30}


def loop_trainer(tg, args, B, T, steps, device):
    """That version's own train() at accumulation 1 on the shards under DATA_PATH, on one model built once: each
    call trains `steps` more steps (after train()'s untimed compile warm-up) and returns train()'s result."""
    loop = copy.copy(args)
    loop.micro_batch_seqs, loop.train_seq_len, loop.train_batch_tokens = B, T, B * T
    loop.iterations, loop.max_wallclock_seconds, loop.train_log_every = steps, 0.0, 10**9
    model = tg.build_model(loop, device)
    make_loader = lambda: tg.DistributedLoader(loop.train_files, loop.vocab_size, 0, 1, B, T, device)  # noqa: E731
    return model, lambda: tg.train(loop, model, model, make_loader, device)


def loop_runner(tg, args, B, T, steps, device):
    """loop_trainer's model, and a call that returns train()'s own ms a step."""
    model, run = loop_trainer(tg, args, B, T, steps, device)
    return model, lambda: 1000 * run()["train_time"] / steps


def bench_loop(tg, args, B, T, steps, device):
    """loop_runner's model and runner after its first call, with that call's result."""
    model, run = loop_runner(tg, args, B, T, steps, device)
    torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    ms = run()
    return model, run, {"ms": ms, "warmup_s": time.perf_counter() - t - ms * steps / 1000,
                        "peak_gib": torch.cuda.max_memory_allocated() / 2**30}


def part_times(tg, model, opts, ema, args, B, T, steps, device):
    """Forward + backward of one block of each kind in isolation, the head + loss, and each update."""
    loader = RandomLoader(B, T, args.vocab_size, device, tg.BOS_ID)
    tg.train_step(model, loader, 1, device)  # every parameter has a grad
    gen = torch.Generator(device=device).manual_seed(1)
    ids, tgt = random_batch(B, T, args.vocab_size, device, gen, tg.BOS_ID)
    ctx = model.context(ids)
    x = torch.randn(B, T, args.model_dim, device=device, requires_grad=True)
    ctx["x0"] = torch.randn(B, T, args.model_dim, device=device, dtype=torch.bfloat16)  # blocks with X0_MIX read it
    gdn, swa = model.blocks[0], model.blocks[model.layout.index("swa")]

    def fwd_bwd(fn):
        def run():
            with tg.autocast(device):
                out = fn()
            if isinstance(out, tuple):  # a block that returns the stream and its MLP's output, to be added later
                out = sum(out)
            out.float().square().mean().backward()
        return run

    parts = {
        "gdn mixer": (fwd_bwd(lambda: gdn.mixer(tg.rms_norm(x), ctx)), model.layout.count("gdn")),
        "attention": (fwd_bwd(lambda: model.attn(tg.rms_norm(x), ctx)), model.layout.count("swa")),
        "mlp": (fwd_bwd(lambda: gdn.mlp(tg.rms_norm(x))), len(model.blocks)),
        "gdn block (mixer+mlp)": (fwd_bwd(lambda: gdn(x, ctx, gdn.mixer)), model.layout.count("gdn")),
        "swa block (attn+mlp)": (fwd_bwd(lambda: swa(x, ctx, model.attn)), model.layout.count("swa")),
        "embed+head+loss": (fwd_bwd(lambda: model.nll(tg.rms_norm(model.embed(ids)), tgt)), 1),
        "context (masks, rotary)": (lambda: model.context(ids), 1),
        "muon": (opts[0].step, 1),
        "adam (embed + scalars)": (lambda: (opts[1].step(), opts[2].step()), 1),
        "ema": (lambda: ema.update(model), 1),
    }
    rows = []
    for name, (fn, count) in parts.items():
        for _ in range(2):
            fn()
        rows.append((name, cuda_ms(fn, steps), count))
        model.zero_grad(set_to_none=False)
    return rows


KERNEL_FAMILIES = [  # first match wins; names as CUDA reports them
    ("matmul (cuBLAS/CUTLASS)", ("gemm", "gemv", "xmma", "cutlass", "nvjet", "cublas")),
    ("flex attention", ("flex", "triton_tem")),
    ("inductor fused", ("triton_poi", "triton_red", "triton_per")),
    ("train_gpt's conv kernels", ("conv_qkv_", "conv_bwd_kernel")),
    # "kernel_kernel": the name tilelang gives fla's chunk_bwd_dqkwg on Hopper
    ("fla gated delta rule", ("chunk", "solve_tril", "recompute_w_u", "wy_repr", "l2norm", "cumsum",
                              "merge_16x16", "kernel_kernel")),
    ("nccl", ("nccl",)),
    ("foreach (optimizers, EMA)", ("foreach", "multi_tensor")),
]


def kernel_family(name: str) -> str:
    low = name.lower()
    return next((fam for fam, keys in KERNEL_FAMILIES if any(k in low for k in keys)), "other eager kernels")


def idle_gaps(spans: list, steps: int, top: int) -> tuple[float, list]:
    """GPU idle milliseconds per step between kernels (spans: (start_us, end_us, name), any stream), and the `top`
    kernels the GPU waited for longest: the idle time just before each, summed by name."""
    spans = sorted(spans)
    waits, busy_until = {}, spans[0][1]
    for start, end, name in spans[1:]:
        if start > busy_until:
            waits[name] = waits.get(name, 0.0) + (start - busy_until) / 1000 / steps
        busy_until = max(busy_until, end)
    return sum(waits.values()), sorted(waits.items(), key=lambda kv: -kv[1])[:top]


def profile_kernels(step, steps: int, top: int) -> tuple[dict, list, tuple]:
    """GPU milliseconds per step by kernel family, for the `top` heaviest kernels with their calls per step, and
    where the GPU sat idle (idle_gaps)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    kernels = {}
    for evt in prof.key_averages():
        us = getattr(evt, "self_device_time_total", 0) or getattr(evt, "self_cuda_time_total", 0)
        if us > 0:
            ms, calls = kernels.get(evt.key, (0.0, 0.0))
            kernels[evt.key] = (ms + us / 1000 / steps, calls + evt.count / steps)
    families = {}
    for name, (ms, _) in kernels.items():
        families[kernel_family(name)] = families.get(kernel_family(name), 0.0) + ms
    spans = [(e.time_range.start, e.time_range.end, e.name) for e in prof.events() if e.device_type == DeviceType.CUDA]
    return families, sorted(kernels.items(), key=lambda kv: -kv[1][0])[:top], idle_gaps(spans, steps, 10)


def kernel_sources(step, names: list) -> dict:
    """launch_sources of one more step, profiled with input shapes."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
        step()
        torch.cuda.synchronize()
    return launch_sources(prof.events(), names)


def launch_sources(events, names: list, top: int = 3) -> dict:
    """For each kernel name, the profiled ops that launched it: (the op and its two enclosing ops, input shapes)
    with calls, most first. Autograd's gradient sums show up as aten::add under an autograd engine frame."""
    found = {name: {} for name in names}
    for evt in events:
        for kernel in evt.kernels:
            if kernel.name in found:
                chain, up = [evt.name], evt.cpu_parent
                while up is not None and len(chain) < 3:
                    chain, up = chain + [up.name], up.cpu_parent
                key = (" < ".join(chain), str(evt.input_shapes))
                found[kernel.name][key] = found[kernel.name].get(key, 0) + 1
    return {name: sorted(src.items(), key=lambda kv: -kv[1])[:top] for name, src in found.items()}


def print_sources(sources: dict):
    print("who launched them (calls in one step; op < enclosing ops; input shapes):")
    for name, src in sources.items():
        print(f"  {name[:110]}")
        for (chain, shapes), calls in src or [(("(no launching op recorded)", ""), 0)]:
            print(f"    {calls:>4}  {chain[:150]}  {shapes[:120]}")


def print_profile(families: dict, heaviest: list, idle: tuple, step_ms: float):
    busy = sum(families.values())
    print(f"\nprofile: GPU busy {busy:.1f} ms of a {step_ms:.1f} ms step ({busy / step_ms:.0%}); by family:")
    for fam, ms in sorted(families.items(), key=lambda kv: -kv[1]):
        print(f"  {fam:<30}{ms:>8.1f} ms {ms / step_ms:>6.1%}")
    print("heaviest kernels (ms per step, calls per step, ms per call):")
    for name, (ms, calls) in heaviest:
        print(f"  {ms:>7.2f} {calls:>5.0f} {ms / calls:>7.3f}  {kernel_family(name)[:12]:<13}{name[:110]}")
    print(f"GPU idle between kernels: {idle[0]:.2f} ms per step; the kernels it waited for longest (idle ms per step):")
    for name, ms in idle[1]:
        print(f"  {ms:>7.2f}  {kernel_family(name)[:12]:<13}{name[:110]}")


def round_timers(codes: list[str], variants: list[str], B: int, T: int, steps: int, device) -> list[tuple]:
    """(label, timer) for each distinct version and each variant ('loop': its train(); others: bench_step's step),
    built and warmed up once; a call of a timer times `steps` more steps and returns their ms a step."""
    timers = []
    for ci, code in enumerate(dict.fromkeys(codes)):
        tg = load_module(code, f"train_gpt_v{ci}")
        args = tg.Hyperparameters()
        for variant in variants:
            label = code if len(variants) == 1 else f"{code} {variant}"
            if variant == "loop":
                _, timer, r = bench_loop(tg, args, B, T, steps, device)
            else:
                model, opts, ema, r = bench_step(tg, args, variant, B, T, steps, device)
                step = step_fn(tg, model, opts, ema, RandomLoader(B, T, args.vocab_size, device, tg.BOS_ID), device)
                timer = lambda step=step: cuda_ms(step, steps)  # noqa: E731
            timers.append((label, timer))
            print(f"built {label}: warm-up {r['warmup_s']:.1f} s, {r['ms']:.1f} ms/step", flush=True)
    return timers


def time_in_turns(timers: list[tuple], rounds: int, tokens: int, note: str):
    """Calls the timers in turns (turn_order); prints each round and then one table against the first timer."""
    times = [[] for _ in timers]
    for i in range(rounds):
        for j in turn_order(i, len(timers)):
            times[j].append(timers[j][1]())
        print(f"round {i + 1}/{rounds}: " + ", ".join(f"{t[-1]:.1f}" for t in times) + " ms/step", flush=True)
    labels = [label for label, _ in timers]
    width = max(len(label) for label in labels) + 1
    print(f"\n{note}; difference and faster rounds against {labels[0]}\n{'version':<{width}}{'median ms':>10}"
          f"{'min ms':>8}{'tok/s (median)':>15}{'diff ms':>9}{'faster':>8}")
    for label, (med, low, diff, wins) in zip(labels, paired_summary(times)):
        print(f"{label:<{width}}{med:>10.1f}{low:>8.1f}{tokens / med * 1000:>15,.0f}{diff:>+9.2f}{wins:>5}/{rounds}")


def loader_ms(tg, args, B, T, device, steps):
    files = tg.shard_files(args.train_files) if Path(args.data_path).is_dir() else []
    if not files:
        return None
    loader = tg.DistributedLoader(args.train_files, args.vocab_size, 0, 1, B, T, device)
    loader.next_batch()
    return cuda_ms(loader.next_batch, steps)


def main():
    cli = argparse.ArgumentParser()
    cli.add_argument("--variants", help="comma-separated (default eager,mlp,train; with --rounds, train)")
    cli.add_argument("--shapes", default="48x2048")
    cli.add_argument("--steps", type=int, default=10)
    cli.add_argument("--breakdown", default="train", help="variant whose parts are timed ('' for none)")
    cli.add_argument("--profile", type=int, default=0, help="profile this many steps of the breakdown variant")
    cli.add_argument("--top", type=int, default=25, help="heaviest kernels the profile lists")
    cli.add_argument("--who", type=int, default=0, help="with --profile: the ops that launched this many of them")
    code_option(cli)
    cli.add_argument("--rounds", type=int, default=0, help="time the versions' variants in turns, this many rounds")
    opt = cli.parse_args()
    variants = (opt.variants or ("train" if opt.rounds else "eager,mlp,train")).split(",")
    if opt.breakdown == "loop":
        cli.error("--breakdown loop: the loop has no parts to time; break down 'train' instead")
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    logging.basicConfig(format="%(message)s", stream=sys.stdout)  # train()'s lines in versions that log through logging
    logging.getLogger("train_gpt").setLevel(logging.INFO)
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}", flush=True)
    if opt.rounds:
        shape = opt.shapes.split(",")[0]
        B, T = map(int, shape.split("x"))
        timers = round_timers(opt.code.split(","), variants, B, T, opt.steps, device)
        logging.getLogger("train_gpt").setLevel(logging.WARNING)  # the loop's own step lines, every round
        return time_in_turns(timers, opt.rounds, B * T, f"in turns, {shape}, {opt.rounds} rounds of {opt.steps} steps")
    table, codes = [], opt.code.split(",")
    for ci, code in enumerate(codes):
        tg = load_module(code, f"train_gpt_v{ci}")
        args = tg.Hyperparameters()
        for shape in opt.shapes.split(","):
            B, T = map(int, shape.split("x"))
            for variant in variants:
                if variant == "loop":  # needs shards: train_gpt's loader names what to set when there are none
                    (model, _, r), opts, ema = bench_loop(tg, args, B, T, max(opt.steps, 20), device), None, None
                else:
                    model, opts, ema, r = bench_step(tg, args, variant, B, T, opt.steps, device)
                fpt = flops_per_token(tg, model, args, T)
                tok_s = B * T / (r["ms"] / 1000)
                table.append((code, shape, variant, r["ms"], tok_s, r["peak_gib"], fpt, fpt * tok_s / 1e12,
                              r["warmup_s"]))
                print(f"measured {code} {shape} {variant}: {r['ms']:.1f} ms/step", flush=True)
                if ci == 0 and variant == opt.breakdown and shape == opt.shapes.split(",")[0]:
                    rows = part_times(tg, model, opts, ema, args, B, T, opt.steps, device)
                    step_ms, data = r["ms"], loader_ms(tg, args, 48, 2048, device, opt.steps)
                    if opt.profile:
                        loader = RandomLoader(B, T, args.vocab_size, device, tg.BOS_ID)
                        step = step_fn(tg, model, opts, ema, loader, device)
                        profiled = profile_kernels(step, opt.profile, opt.top)
                        if opt.who:  # one more profiled step, with shapes: only when asked for
                            sources = kernel_sources(step, [name for name, _ in profiled[1][:opt.who]])
                del model, opts, ema
                torch.cuda.empty_cache()
    if opt.breakdown:
        print(f"\nper part, {codes[0]}, variant '{opt.breakdown}', {opt.shapes.split(',')[0]} "
              f"(fwd+bwd unless an update):")
        print(f"{'part':<26}{'ms each':>9}{'x n':>5}{'ms/step':>9}{'share':>7}")
        for name, ms, n in rows:
            print(f"{name:<26}{ms:>9.2f}{n:>5}{ms * n:>9.1f}{ms * n / step_ms:>7.0%}")
        if data is not None:
            print(f"{'data (48x2048 from shards)':<26}{data:>9.2f}{1:>5}{data:>9.1f}{data / step_ms:>7.0%}")
        if opt.profile:
            print_profile(*profiled, step_ms)
            if opt.who:
                print_sources(sources)
    width = max([len("code")] + [len(row[0]) for row in table]) + 1
    print(f"\n{'code':<{width}}{'shape':<9}{'variant':<8}{'ms/step':>9}{'tok/s':>12}{'peak GiB':>9}{'GFLOP/tok':>10}"
          f"{'TFLOP/s':>9}{'of peak':>8}{'warm-up s':>10}")
    for code, shape, variant, ms, tok_s, peak, fpt, tflops, warm in table:
        print(f"{code:<{width}}{shape:<9}{variant:<8}{ms:>9.1f}{tok_s:>12,.0f}{peak:>9.1f}{fpt / 1e9:>10.3f}"
              f"{tflops:>9.0f}{tflops / H100_BF16_DENSE_TFLOPS:>8.1%}{warm:>10.1f}")


if __name__ == "__main__":
    main()
