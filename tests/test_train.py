"""Optimizer and training sections: Muon, the schedule, warm-up that keeps nothing, learning, stopping."""

import copy
import math
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import train_gpt
from conftest import PLAIN_INPUTS, TINY_MODEL, tiny_args


def make_loader(args):
    return lambda: train_gpt.DistributedLoader(args.train_files, args.vocab_size, 0, 1, args.micro_batch_seqs,
                                               args.train_seq_len, torch.device("cpu"))


def fresh_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return train_gpt.GDNHybrid(dict(TINY_MODEL, **overrides))


def test_newton_schulz_orthogonalises():
    G = torch.randn(96, 48) @ torch.diag(torch.logspace(0, 1, 48))  # singular values spread 10x
    s = torch.linalg.svdvals(train_gpt.newton_schulz(G, 5))
    assert s.min() > 0.5 and s.max() < 1.3


def test_newton_schulz_treats_a_stack_as_separate_matrices():
    G = torch.randn(3, 96, 48)
    G[1] *= 100  # each matrix is normalised on its own
    each = torch.stack([train_gpt.newton_schulz(g, 5) for g in G])
    assert torch.allclose(train_gpt.newton_schulz(G, 5), each, atol=1e-5)


def muon_first_update(grad: torch.Tensor) -> torch.Tensor:
    """Muon's first update by its definition: rows to unit norm, Newton-Schulz, then each neuron (row of a tall or
    square matrix, column of a wide one) divided by its RMS (NorMuon's running mean square starts as this step's,
    times a constant the norm's restoration cancels), the update's norm restored, the tall matrices' aspect gain."""
    u = train_gpt.newton_schulz(grad / grad.norm(dim=1, keepdim=True), 5)
    n, k = grad.shape
    scaled = u / u.square().mean(dim=1 if n >= k else 0, keepdim=True).sqrt()
    return scaled * u.norm() / scaled.norm() * max(1, n / k) ** 0.5


def test_muon_first_step_is_the_scaled_orthogonalised_gradient():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(*s)) for s in ((96, 64), (64, 64), (96, 64), (64, 96))]
    for p in params:
        p.grad = torch.randn_like(p)
    before = [p.detach().clone() for p in params]
    train_gpt.Muon(params, lr=0.1, momentum=0.9, ns_steps=5, weight_decay=0.5, neuron_beta2=0.95).step()
    for p, p0 in zip(params, before):
        update = muon_first_update(p.grad)
        assert torch.allclose(p.detach(), p0 * (1 - 0.1 * 0.5) - 0.1 * update, atol=1e-5)


def test_muon_equilibrates_rows_so_a_loud_row_does_not_change_the_update():
    torch.manual_seed(0)
    grad = torch.randn(64, 96)
    loud = grad.clone()
    loud[3] *= 50  # plain Muon would let this row dominate the orthogonalisation
    updates = []
    for g in (grad, loud):
        p = torch.nn.Parameter(torch.zeros(64, 96))
        p.grad = g
        train_gpt.Muon([p], lr=1.0, momentum=0.0, ns_steps=5, weight_decay=0.0, neuron_beta2=0.95).step()
        updates.append(-p.detach())
    assert torch.allclose(updates[0], updates[1], atol=1e-5)
    ns = [train_gpt.newton_schulz(g, 5) for g in (grad, loud)]
    assert not torch.allclose(ns[0], ns[1], atol=1e-2)  # without the equilibration they differ, so the test can fail


def test_normuon_first_step_gives_every_neuron_the_same_rms_and_keeps_the_update_norm():
    torch.manual_seed(0)
    for shape, neuron_dim in (((96, 64), 1), ((64, 96), 0)):  # rows of a tall matrix, columns of a wide one
        grad = torch.randn(*shape) * torch.logspace(-1, 1, shape[1])  # neurons of unequal size
        p = torch.nn.Parameter(torch.zeros(*shape))
        p.grad = grad.clone()
        train_gpt.Muon([p], lr=1.0, momentum=0.0, ns_steps=5, weight_decay=0.0, neuron_beta2=0.95).step()
        update = -p.detach()
        plain = train_gpt.newton_schulz(grad / grad.norm(dim=1, keepdim=True), 5) * max(1, shape[0] / shape[1]) ** 0.5
        rms, plain_rms = (u.square().mean(dim=neuron_dim).sqrt() for u in (update, plain))
        assert torch.allclose(update.norm(), plain.norm(), rtol=1e-5)
        assert torch.allclose(rms, rms.mean().expand_as(rms), rtol=1e-4)
        assert plain_rms.max() / plain_rms.min() > 1.1  # plain Muon's neurons differ, so the test can fail


def test_muon_state_dict_holds_normuon_state_so_the_compile_warm_up_undoes_it():
    """compile_warmup restores the optimizers from their state_dicts: the per-neuron mean squares must be in them."""
    torch.manual_seed(0)
    grads = [torch.randn(96, 64), torch.randn(96, 64)]
    params = [torch.nn.Parameter(torch.zeros(96, 64)) for _ in grads]
    opt = train_gpt.Muon(params, lr=1.0, momentum=0.9, ns_steps=5, weight_decay=0.0, neuron_beta2=0.5)
    initial = copy.deepcopy(opt.state_dict())
    for _ in range(2):
        for p, g in zip(params, grads):
            p.grad = torch.randn_like(g)
        opt.step()
    opt.load_state_dict(initial)
    fresh = [torch.nn.Parameter(torch.zeros(96, 64)) for _ in grads]
    fresh_opt = train_gpt.Muon(fresh, lr=1.0, momentum=0.9, ns_steps=5, weight_decay=0.0, neuron_beta2=0.5)
    for group in (params, fresh):
        with torch.no_grad():
            for p in group:
                p.zero_()
        for p, g in zip(group, grads):
            p.grad = g.clone()
    opt.step()
    fresh_opt.step()
    assert all(torch.allclose(p, q, atol=1e-6) for p, q in zip(params, fresh))


def muon_params_after_two_steps() -> list[torch.Tensor]:
    """Stacks of 3, 2 and 1 same-shape matrices: over three ranks the shares are uneven, and some ranks get none."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(*s)) for s in ((96, 64), (64, 96), (96, 64), (64, 64), (64, 96), (96, 64))]
    opt = train_gpt.Muon(params, lr=0.1, momentum=0.9, ns_steps=5, weight_decay=0.5, neuron_beta2=0.95)
    for _ in range(2):
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
    return [p.detach() for p in params]


def run_muon_rank(rank: int, world: int, out: str, port: int):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    torch.save(muon_params_after_two_steps(), f"{out}/{rank}.pt")
    torch.distributed.destroy_process_group()


def test_muon_split_over_three_ranks_matches_one_process(tmp_path):
    torch.multiprocessing.spawn(run_muon_rank, args=(3, str(tmp_path), 29518), nprocs=3)
    alone = muon_params_after_two_steps()
    for rank in range(3):
        for p, q in zip(torch.load(tmp_path / f"{rank}.pt"), alone):
            assert torch.allclose(p, q, atol=1e-6)


@pytest.mark.parametrize("features", [{}, PLAIN_INPUTS])
def test_parameter_groups_cover_every_parameter_once(features):
    model = fresh_model(**features)
    opts = train_gpt.build_optimizers(model, tiny_args(Path(".")))
    groups = [p for opt in opts for g in opt.param_groups for p in g["params"]]
    assert len(groups) == len({id(p) for p in groups}) == len(list(model.parameters()))
    muon = opts[0].param_groups[0]["params"]
    assert all(p.ndim == 2 and min(p.shape) >= 64 for p in muon) and id(model.attn.q.weight) in map(id, muon)


def test_schedule_warms_up_then_decays_to_zero_at_the_time_budget():
    args = tiny_args(Path("."), lr_warmup_steps=10, warmdown_frac=0.5, max_wallclock_seconds=100.0, iterations=10**6)
    assert train_gpt.lr_scale(0, 0.0, args) == pytest.approx(0.1)
    assert train_gpt.lr_scale(50, 40.0, args) == 1.0
    assert train_gpt.lr_scale(50, 75.0, args) == pytest.approx(0.5)
    assert train_gpt.lr_scale(50, 100.0, args) == 0.0


def test_grad_accumulation_keeps_the_global_batch(tmp_path):
    args = tiny_args(tmp_path, train_batch_tokens=8 * 64 * 4)
    assert [train_gpt.grad_accum_steps(args, w) for w in (1, 2, 4)] == [4, 2, 1]
    with pytest.raises(ValueError, match="not a multiple"):
        train_gpt.grad_accum_steps(args, 3)


def test_compile_warmup_keeps_nothing(markov_data):
    args = tiny_args(markov_data, iterations=0, compile_warmup_steps=2)
    model = fresh_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = train_gpt.train(args, model, model, make_loader(args), torch.device("cpu"))
    assert out["steps"] == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.skipif(not torch.cuda.is_available() or train_gpt.triton is None,
                    reason="needs CUDA and Triton: a host sync is a wait for the GPU")
def test_a_training_step_never_waits_for_the_gpu(markov_data):
    """The host stays ahead of the GPU through whole steps (schedule, forward, backward, optimizers, EMA): any
    synchronising call in them raises under torch's sync debug mode, once the first steps have compiled."""
    args, device = tiny_args(markov_data), torch.device("cuda")
    model = train_gpt.build_model(args, device)
    optimizers, ema = train_gpt.build_optimizers(model, args), train_gpt.EMA(model, args.ema_decay)
    loader = train_gpt.DistributedLoader(args.train_files, args.vocab_size, 0, 1, args.micro_batch_seqs,
                                         args.train_seq_len, device)

    def step(i):
        train_gpt.set_schedule(optimizers, i, 0.0, args)
        train_gpt.train_step(model, loader, 1, device)
        train_gpt.step_optimizers(optimizers)
        ema.update(model)

    for i in range(3):  # compiling, autotuning and the allocator's first requests may wait
        step(i)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i in range(3, 6):
            step(i)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


def unigram_entropy(tokens: np.ndarray) -> float:
    p = np.bincount(tokens) / len(tokens)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def test_tiny_model_learns_far_below_unigram_entropy(markov_data, capsys):
    args = tiny_args(markov_data)
    model = fresh_model()
    out = train_gpt.train(args, model, model, make_loader(args), torch.device("cpu"))
    out["ema"].copy_to(model)
    val = train_gpt.load_val_tokens(args.val_files, args.vocab_size)
    x, y = val[:-1][:1920].view(-1, 64), val[1:][:1920].view(-1, 64)
    with torch.no_grad():
        loss = model(x, y).mean().item()
    entropy = unigram_entropy(val.numpy())
    assert out["steps"] == args.iterations and "stopping: iterations after 60 steps" in capsys.readouterr().out
    assert loss < 0.6 * entropy, (loss, entropy)


def test_a_step_line_holds_the_longest_step_since_the_line_before(markov_data, capsys):
    """A 0.5 s stall of the host in step 15 shows in the step-20 line's step_max, and in no other line's."""
    args = tiny_args(markov_data, iterations=30, train_log_every=10, compile_warmup_steps=0)
    model, loader, calls = fresh_model(), make_loader(args)(), [0]
    next_batch = loader.next_batch

    def stalling_batch():
        calls[0] += 1
        if calls[0] == 15:
            time.sleep(0.5)
        return next_batch()
    loader.next_batch = stalling_batch
    train_gpt.train(args, model, model, lambda: loader, torch.device("cpu"))
    step_max = {int(step): float(ms) for step, ms in re.findall(r"step:(\d+)/30 .* step_max:([\d.]+)ms ",
                                                                capsys.readouterr().out)}
    assert list(step_max) == [1, 2, 3, 4, 5, 10, 20, 30]
    assert step_max[20] >= 500 and max(ms for step, ms in step_max.items() if step != 20) < 500, step_max


def test_wallclock_cap_stops_the_run_and_says_why(markov_data, capsys):
    args = tiny_args(markov_data, iterations=10**6, max_wallclock_seconds=1.0, compile_warmup_steps=0)
    model = fresh_model()
    out = train_gpt.train(args, model, model, make_loader(args), torch.device("cpu"))
    assert 0 < out["steps"] < 10**6 and 1.0 <= out["train_time"] < 5.0
    assert "stopping: wall-clock cap" in capsys.readouterr().out


def run_rank_with_a_skewed_clock(rank: int, data: str, out: str):
    """One gloo rank of a wall-clock-capped run; rank 1's clock runs three times as fast as rank 0's."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29517")
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    if rank == 1:
        real, wall = train_gpt.time.perf_counter, train_gpt.time.time
        train_gpt.time = type("Clock", (), {"perf_counter": staticmethod(lambda: 3 * real()), "time": wall})
    args = tiny_args(Path(data), iterations=10**6, max_wallclock_seconds=3.0, compile_warmup_steps=1,
                     train_batch_tokens=1024)
    model = fresh_model()
    loader = lambda: train_gpt.DistributedLoader(args.train_files, args.vocab_size, rank, 2,  # noqa: E731
                                                 args.micro_batch_seqs, args.train_seq_len, torch.device("cpu"))
    result = train_gpt.train(args, model, torch.nn.parallel.DistributedDataParallel(model), loader,
                             torch.device("cpu"))
    torch.save({"steps": result["steps"], "weights": [p.detach() for p in model.parameters()]}, f"{out}/{rank}.pt")
    torch.distributed.destroy_process_group()


def test_ranks_share_one_clock_so_weights_and_the_last_step_agree(markov_data, tmp_path):
    torch.multiprocessing.spawn(run_rank_with_a_skewed_clock, args=(str(markov_data), str(tmp_path)), nprocs=2)
    a, b = (torch.load(tmp_path / f"{r}.pt") for r in (0, 1))
    assert a["steps"] == b["steps"] > 1
    assert all(torch.equal(x, y) for x, y in zip(a["weights"], b["weights"]))


def gloo_starts() -> bool:
    """Whether a gloo process group can be made here at all (it needs a host name that resolves)."""
    try:
        torch.distributed.init_process_group("gloo", store=torch.distributed.HashStore(), rank=0, world_size=1)
    except Exception:
        return False
    torch.distributed.destroy_process_group()
    return True


def train_as_rank(rank: int, world: int, data: str, out: str, port: int = 0):
    """Eight steps of the tiny model, global batch 4 x 2 x 64 tokens: 4 micro-batches on 1 rank, 2 on each of
    2, 1 on each of 4. Rank 0 keeps the logged losses (in its log) and the final weights."""
    torch.set_num_threads(1)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    args = tiny_args(Path(data), micro_batch_seqs=2, train_batch_tokens=4 * 2 * 64, iterations=8, train_log_every=1)
    model = fresh_model()
    loader = lambda: train_gpt.DistributedLoader(args.train_files, args.vocab_size, rank, world,  # noqa: E731
                                                 args.micro_batch_seqs, args.train_seq_len, torch.device("cpu"))
    train_gpt.start_logging(rank, f"{out}/{world}.log")
    train_gpt.train(args, model, torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model, loader,
                    torch.device("cpu"))
    if rank == 0:
        torch.save([p.detach() for p in model.parameters()], f"{out}/{world}.pt")
    if world > 1:
        torch.distributed.destroy_process_group()


def logged_losses(path) -> list[float]:
    return [float(x) for x in re.findall(r"^step:\d+/\d+ train_loss:([\d.]+)", path.read_text(), flags=re.M)]


def test_two_and_four_ranks_train_as_one_does(markov_data, tmp_path):
    """Same seed, same global batch: every rank's share is a micro-batch that one rank would accumulate, so
    the logged losses and the weights agree up to float32 rounding, where the order of the sums differs (DDP
    averages the ranks' gradients, one rank adds up its micro-batches). Measured on 2 CPU cores, 8 steps: the
    logged losses equal to their 4 printed decimals, the weights within 1.9e-6 (2 ranks) and 1.1e-6 (4 ranks).
    Bounds: one unit of the last printed decimal, and 2e-5, ten times the weights' measured gap."""
    if not torch.distributed.is_gloo_available() or not gloo_starts():
        pytest.skip("gloo cannot start here")
    threads = torch.get_num_threads()
    try:
        train_as_rank(0, 1, str(markov_data), str(tmp_path))
    finally:
        torch.set_num_threads(threads)
    for world, port in ((2, 29519), (4, 29520)):
        torch.multiprocessing.spawn(train_as_rank, args=(world, str(markov_data), str(tmp_path), port), nprocs=world)
    one, weights = logged_losses(tmp_path / "1.log"), torch.load(tmp_path / "1.pt")
    assert len(one) == 8 and one[-1] < one[0] - 0.5
    for world in (2, 4):
        losses = logged_losses(tmp_path / f"{world}.log")
        assert len(losses) == 8 and max(abs(a - b) for a, b in zip(losses, one)) <= 1.01e-4, (world, losses, one)
        gap = max((p - q).abs().max().item() for p, q in zip(torch.load(tmp_path / f"{world}.pt"), weights))
        assert gap < 2e-5, (world, gap)


def test_non_finite_loss_stops_with_a_clear_error(markov_data):
    args = tiny_args(markov_data, compile_warmup_steps=0)
    model = fresh_model()
    with torch.no_grad():
        model.embed.weight[5] = math.nan
    with pytest.raises(FloatingPointError, match="non-finite training loss at step 1"):
        train_gpt.train(args, model, model, make_loader(args), torch.device("cpu"))


def test_ema_forgets_the_initial_weights_in_a_short_run():
    model = torch.nn.Linear(4, 4, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = train_gpt.EMA(model, 0.997)
    with torch.no_grad():
        model.weight.fill_(1.0)
    for _ in range(100):  # a fixed 0.997 decay would still hold 74% of the initial zeros here
        ema.update(model)
    assert ema.shadow[0].min() > 0.9


def test_ema_at_decay_zero_exports_the_final_weights_without_a_copy():
    model, plain = torch.nn.Linear(4, 4, bias=False), torch.nn.Linear(4, 4, bias=False)
    ema = train_gpt.EMA(model, 0.0)
    assert ema.shadow[0] is model.weight  # no float copy held, none updated
    with torch.no_grad():
        model.weight.fill_(2.0)
    ema.update(model)
    ema.copy_to(plain)
    assert torch.equal(plain.weight, model.weight) and ema.last_decay() == 0


@pytest.mark.parametrize("decay", [1.0, -0.1])
def test_ema_rejects_a_decay_outside_zero_to_one(decay):
    with pytest.raises(ValueError, match=r"EMA_DECAY=.* must be in \[0, 1\): 0 exports the final weights"):
        train_gpt.EMA(torch.nn.Linear(2, 2), decay)
