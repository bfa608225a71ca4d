"""scripts/bench/bench_step.py end to end on a tiny model (GPU only): its per-part breakdown calls the blocks outside
the model's own forward, so it breaks whenever a block reads something new from the model's context. And
scripts/bench/inductor_tables.py, which reads what scripts/bench/profile_inductor.sh collects."""

import gc
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import train_gpt
from conftest import ROOT, tiny_args
from scripts import common
from scripts.bench import bench_step, inductor_tables


@pytest.mark.skipif(not torch.cuda.is_available(), reason="times CUDA kernels: needs a GPU")
def test_bench_step_times_every_part_and_profiles(tmp_path):
    tiny = {"MODEL_DIM": "128", "NUM_HEADS": "2", "NUM_KV_HEADS": "1", "GDN_PER_GROUP": "1", "SWA_WINDOW": "128",
            "DATA_PATH": str(tmp_path / "no_shards")}
    run = subprocess.run([sys.executable, "bench_step.py", "--variants", "train", "--shapes", "2x256", "--steps", "2",
                          "--profile", "1", "--who", "3"], cwd=ROOT / "scripts" / "bench",
                         env={**os.environ, **tiny}, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    for part in ("gdn block (mixer+mlp)", "swa block (attn+mlp)", "muon", "profile: GPU busy", "calls per step",
                 "GPU idle between kernels", "who launched them"):
        assert part in run.stdout, run.stdout[-3000:]
    assert "  aten::" in run.stdout.split("who launched them")[1], run.stdout[-3000:]
    assert run.stdout.splitlines()[-1].split()[1:3] == ["2x256", "train"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="times CUDA kernels: needs a GPU")
def test_bench_step_rounds_time_the_versions_in_turns(tmp_path):
    tiny = {"MODEL_DIM": "128", "NUM_HEADS": "2", "NUM_KV_HEADS": "1", "GDN_PER_GROUP": "1", "SWA_WINDOW": "128"}
    codes = f"../../train_gpt.py,{ROOT / 'train_gpt.py'},../../train_gpt.py"  # two names of one file: two versions
    run = subprocess.run([sys.executable, "bench_step.py", "--shapes", "2x256", "--steps", "2", "--rounds", "3",
                          "--code", codes], cwd=ROOT / "scripts" / "bench", env={**os.environ, **tiny},
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("round ") == 3 and run.stdout.count("built ") == 2, run.stdout[-3000:]
    last = run.stdout.splitlines()[-2:]
    assert last[0].split()[0] == "../../train_gpt.py" and last[0].split()[-2:] == ["+0.00", "0/3"], last


@pytest.mark.skipif(not torch.cuda.is_available(), reason="times CUDA kernels: needs a GPU")
def test_bench_step_rounds_time_the_step_and_the_loop_in_turns(markov_data):
    tiny = {"MODEL_DIM": "128", "NUM_HEADS": "2", "NUM_KV_HEADS": "1", "GDN_PER_GROUP": "1", "SWA_WINDOW": "128",
            "VOCAB_SIZE": "64", "DATA_PATH": str(markov_data)}
    run = subprocess.run([sys.executable, "bench_step.py", "--shapes", "2x128", "--steps", "3", "--rounds", "2",
                          "--variants", "train,loop"], cwd=ROOT / "scripts" / "bench", env={**os.environ, **tiny},
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    rounds = run.stdout.split("built ")[-1]  # the loop's own step lines stay out of the rounds
    assert rounds.count("round ") == 2 and "step:" not in rounds, run.stdout[-3000:]
    last = run.stdout.splitlines()[-2:]
    assert last[0].split()[1] == "train" and last[1].split()[1] == "loop", last


def test_loop_runner_trains_its_one_model_further_at_every_call(markov_data, capsys):
    model, run = bench_step.loop_runner(train_gpt, tiny_args(markov_data), 2, 64, 3, torch.device("cpu"))
    seen = [p.detach().clone() for p in model.parameters()]
    for _ in range(2):
        assert run() > 0
        now = [p.detach().clone() for p in model.parameters()]
        assert any(not torch.equal(a, b) for a, b in zip(seen, now))
        seen = now
    assert capsys.readouterr().out.count("stopping: iterations after 3 steps, train_time:") == 2


def test_gc_pauses_counts_only_the_collections_after_a_given_time():
    from scripts.bench.gc_pauses import Collections
    with Collections() as seen:
        gc.collect(0)
        t = time.perf_counter()
        gc.collect()
    assert [len(seen.since(0.0)[g]) for g in range(3)] == [1, 0, 1]
    assert [len(seen.since(t)[g]) for g in range(3)] == [0, 0, 1] and seen.since(time.perf_counter())[2] == []


def test_gc_pauses_runs_the_compiled_loop_and_times_a_full_collection(markov_data, monkeypatch, capsys):
    from scripts.bench import gc_pauses
    tiny_model_settings(monkeypatch)
    monkeypatch.setenv("DATA_PATH", str(markov_data))
    gc_pauses.main(["--steps", "3", "--shape", "2x64", "--compile"])
    row, pauses = capsys.readouterr().out.strip().splitlines()[-2:]
    assert "3 steps at " in row and "collections gen0/1/2 " in row, row
    assert "train() froze " in row and int(pauses.split()[1].replace(",", "")) > 0, (row, pauses)
    assert "objects tracked: a full collection takes " in pauses and pauses.endswith("ms after gc.freeze()"), pauses


def test_time_in_turns_reverses_the_order_every_other_round(capsys):
    calls = []

    def timer(name, ms):
        return name, lambda: calls.append(name) or ms.pop(0)
    bench_step.time_in_turns([timer("a", [10.0, 12.0, 11.0]), timer("b", [9.0, 13.0, 10.0])], 3, 98_304, "note")
    assert calls == ["a", "b", "b", "a", "a", "b"]
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == ["round 1/3: 10.0, 9.0 ms/step", "round 2/3: 12.0, 13.0 ms/step", "round 3/3: 11.0, 10.0 ms/step"]
    assert out[-2].split() == ["a", "11.0", "10.0", "8,936,727", "+0.00", "0/3"]
    assert out[-1].split() == ["b", "10.0", "9.0", "9,830,400", "-1.00", "2/3"]


def test_paired_summary_compares_each_round_with_the_first_version():
    times = [[10.0, 11.0, 12.0], [9.0, 12.0, 11.0], [10.0, 10.0, 10.0]]
    assert common.paired_summary(times) == [(11.0, 10.0, 0.0, 0), (11.0, 9.0, -1.0, 2), (10.0, 10.0, -1.0, 2)]


def test_inductor_tables_keeps_each_graphs_first_table_under_its_compile_id():
    def table(graph, *rows):
        lines = [f"{ms}ms    \t{gb} GB \t {bw}GB/s \t 50.00% \t {kernel}" for ms, gb, bw, kernel in rows]
        return "\n".join(["====================", f"TRITON KERNELS BANDWIDTH INFO (/tmp/ti/ab/{graph}.py)", *lines,
                          f"SUMMARY (/tmp/ti/ab/{graph}.py)", "0.30ms   \t 0.30 GB\t 1000.00GB/s", ""])
    report = (table("cfwd", (0.2, 0.1, 500.0, "triton_per_a_0"), (0.1, 0.2, 2000.0, "triton_poi_b_1"))
              + table("cbwd", (0.4, 0.8, 2000.0, "triton_per_c_0"))
              + table("cfwd", (9.9, 9.9, 1.0, "triton_per_a_0")))  # a later call of the same graph
    log = "\n".join(f"V1125 03:28:51 1 torch/_inductor/graph.py:2563] [{cid}] [__output_code] Output code written "
                    f"to: /tmp/ti/ab/{graph}.py" for cid, graph in (("1/0_1", "cfwd"), ("1/0_1", "cbwd")))
    tables = inductor_tables.first_tables(report)
    assert tables == {"cfwd.py": [(0.2, 0.1, 500.0, "triton_per_a_0"), (0.1, 0.2, 2000.0, "triton_poi_b_1")],
                      "cbwd.py": [(0.4, 0.8, 2000.0, "triton_per_c_0")]}
    assert inductor_tables.compile_ids(log) == {"cfwd.py": "1/0_1", "cbwd.py": "1/0_1"}


def test_idle_gaps_counts_only_time_when_no_stream_runs_a_kernel():
    spans = [(0, 100, "a"), (50, 300, "b"), (120, 200, "c"),  # c overlaps b on another stream: no idle before it
             (400, 500, "fla"), (1500, 1600, "fla"), (1700, 1800, "c")]
    idle, waits = bench_step.idle_gaps(spans, steps=2, top=5)
    assert waits == [("fla", (100 + 1000) / 1000 / 2), ("c", 100 / 1000 / 2)] and idle == pytest.approx(0.6)


def test_launch_sources_names_the_op_its_callers_and_shapes_per_kernel():
    event = lambda name, parent=None, kernels=(), shapes=(): SimpleNamespace(  # noqa: E731
        name=name, cpu_parent=parent, kernels=[SimpleNamespace(name=k) for k in kernels], input_shapes=list(shapes))
    engine = event("autograd::engine::evaluate_function: CompiledFunctionBackward", event("backward"))
    adds = [event("aten::add", engine, ["add_kernel"], [[4, 8], [4, 8]]) for _ in range(3)]
    other = event("aten::add", None, ["add_kernel"], [[2], [2]])
    ignored = event("aten::mm", None, ["gemm"], [[4, 4], [4, 4]])
    sources = bench_step.launch_sources([*adds, other, ignored, engine], ["add_kernel", "absent"])
    assert sources == {"add_kernel": [(("aten::add < autograd::engine::evaluate_function: CompiledFunctionBackward "
                                        "< backward", "[[4, 8], [4, 8]]"), 3), (("aten::add", "[[2], [2]]"), 1)],
                       "absent": []}


def tiny_model_settings(monkeypatch):
    """The environment under which a script's Hyperparameters() describe a tiny model."""
    for key, value in {"VOCAB_SIZE": "64", "MODEL_DIM": "64", "NUM_HEADS": "2", "NUM_KV_HEADS": "1",
                       "GDN_PER_GROUP": "1", "MLP_MULT": "2"}.items():
        monkeypatch.setenv(key, value)


def test_muon_ops_counts_at_least_the_products_of_every_stack(monkeypatch, capsys):
    """Tiny model, on the CPU: 4 same-shape stacks of projections, each 5 Newton-Schulz iterations of 3 products."""
    from scripts.bench import muon_ops
    tiny_model_settings(monkeypatch)
    muon_ops.main(["--code", str(ROOT / "train_gpt.py")])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"{ROOT / 'train_gpt.py'}: ") and "operations in one Muon step" in line
    assert int(line.split(": ")[1].split()[0]) >= 4 * 5 * 3


def test_muon_floor_counts_newton_schulz_products_and_the_stacks_bytes_exactly(monkeypatch, capsys):
    """Tiny model on the meta device: the FLOPs are Newton-Schulz's three products per iteration of every matrix, in
    bf16 as on a GPU; the stacking reads each fp32 gradient once and writes it once; no view moves bytes."""
    from scripts.bench import muon_ops
    tiny_model_settings(monkeypatch)
    calls, moved, flops = muon_ops.muon_floor(str(ROOT / "train_gpt.py"), 0)
    tg = common.load_module(str(ROOT / "train_gpt.py"), "train_gpt_tiny")  # its settings read from this environment
    args = tg.Hyperparameters()
    shapes = [p.shape for n, p in tg.GDNHybrid(args.model_config()).named_parameters() if tg.is_matrix(n, p)]
    iteration = sum(2 * min(s) ** 2 * max(s) * 2 + 2 * min(s) ** 3 for s in shapes)
    assert sum(flops.values()) == args.muon_ns_steps * iteration
    assert moved["stack"] == 2 * 4 * sum(s.numel() for s in shapes)
    # per iteration baddbmm(A, A, A) reads 3 m² and writes m², baddbmm(X, B, X) reads 2 mM + m² and writes mM: in bf16
    assert moved["baddbmm"] == 2 * args.muon_ns_steps * sum(5 * min(s) ** 2 + 3 * min(s) * max(s) for s in shapes)
    assert not {"view", "_unsafe_view", "split", "split_with_sizes", "transpose"} & set(calls)
    muon_ops.main(["--code", str(ROOT / "train_gpt.py"), "--floor"])
    last = capsys.readouterr().out.strip().splitlines()[-1].split()
    assert last[0] == "all" and float(last[2]) == round(sum(flops.values()) / 1e9, 1)


def test_graph_passes_counts_an_output_scale_as_a_sum_over_tokens_and_a_scale_in_the_weight_as_none():
    from scripts.bench.graph_passes import count_passes
    B, T, D = 2, 30, 8
    x, w, scale = torch.randn(B, T, D, requires_grad=True), torch.randn(D, D, requires_grad=True), torch.ones(D)
    scale.requires_grad_()
    by_output = count_passes(lambda x: scale * F.linear(x, w), [x], B, T)
    by_weight = count_passes(lambda x: F.linear(x, scale[:, None] * w), [x], B, T)
    assert by_output["backward"]["nodes"]["sum over tokens"] == 1 == by_output["forward"]["nodes"]["mul"]
    assert by_output["backward"]["values"]["sum over tokens"] == D
    assert by_weight["backward"]["nodes"]["sum over tokens"] == 0 == by_weight["forward"]["nodes"]["mul"]
    assert by_weight["forward"]["nodes"]["mm"] == 1 == by_weight["backward"]["nodes"]["mm"]  # dx (dw: weight-sized)


def test_graph_passes_reports_both_blocks(monkeypatch, capsys):
    from scripts.bench import graph_passes
    tiny_model_settings(monkeypatch)
    graph_passes.main(["--code", str(ROOT / "train_gpt.py")])
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(": ")[1] for line in lines] == ["gdn block", "swa block"]
    assert all(" sums over tokens " in line and "backward " in line for line in lines)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="times CUDA kernels: needs a GPU")
def test_bench_mlp_times_both_paths():
    run = subprocess.run([sys.executable, "scripts/bench/bench_mlp.py", "--tokens", "4096",
                          "--rounds", "2", "--calls", "2"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [line for line in run.stdout.splitlines() if line.startswith(("| fused", "| modules"))]
    assert [r.split(" | ")[0] for r in rows] == ["| fused", "| modules"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="times CUDA kernels: needs a GPU")
def test_bench_mlp_times_each_versions_fused_path():
    run = subprocess.run([sys.executable, "scripts/bench/bench_mlp.py", "--tokens", "4096",
                          "--rounds", "2", "--calls", "2", "--code", "train_gpt.py,train_gpt.py"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [line.split(" | ")[0] for line in run.stdout.splitlines() if line.startswith("| fused")]
    assert rows == ["| fused, 0: train_gpt.py", "| fused, 1: train_gpt.py"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is what a machine without a GPU sees")
def test_bench_mlp_says_what_it_needs_without_a_gpu():
    run = subprocess.run([sys.executable, "scripts/bench/bench_mlp.py"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 1 and "needs a CUDA GPU and Triton" in run.stderr
