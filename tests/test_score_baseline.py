"""scripts/bench/score_baseline.py: the challenge baseline scored by our evaluation. Needs the baseline's
train_gpt.py in the ignored .baseline/ (never committed), so a clean clone skips these."""

import io
import os
import random
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch

from conftest import encode_stream, random_document, write_shard

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / ".baseline" / "train_gpt.py"
pytestmark = pytest.mark.skipif(not BASELINE.is_file(), reason="no .baseline/train_gpt.py (see scripts/bench/baseline_proxy.sh)")


@pytest.fixture
def tiny_baseline(tmp_path, monkeypatch, tokenizer):
    """A small random baseline GPT packed by its own int8+zlib code, with a val shard of our tokenizer."""
    for k, v in dict(NUM_LAYERS="2", MODEL_DIM="64", NUM_HEADS="2", NUM_KV_HEADS="1", TRAIN_SEQ_LEN="64",
                     VOCAB_SIZE="400", DATA_PATH=str(tmp_path), TOKENIZER_PATH=tokenizer.model_path,
                     EVAL_STRIDE="32", EVAL_BATCH_SEQS="8").items():
        monkeypatch.setenv(k, v)
    from scripts.bench import score_baseline
    base = score_baseline.load_module(str(BASELINE), "baseline_train_gpt")
    h = base.Hyperparameters()
    torch.manual_seed(0)
    gpt = base.GPT(vocab_size=h.vocab_size, num_layers=h.num_layers, model_dim=h.model_dim, num_heads=h.num_heads,
                   num_kv_heads=h.num_kv_heads, mlp_mult=h.mlp_mult, tie_embeddings=h.tie_embeddings,
                   tied_embed_init_std=0.5, logit_softcap=h.logit_softcap, rope_base=h.rope_base,
                   qk_gain_init=h.qk_gain_init)
    for p in gpt.parameters():
        p.data += 0.05 * torch.randn_like(p)
    obj, _ = base.quantize_state_dict_int8(gpt.state_dict())
    buf = io.BytesIO()
    torch.save(obj, buf)
    (tmp_path / "model.ptz").write_bytes(zlib.compress(buf.getvalue()))
    rng = random.Random(1)
    write_shard(tmp_path / "fineweb_val_000000.bin", encode_stream(tokenizer, [random_document(rng) for _ in range(60)]))
    return score_baseline, base, tmp_path


def score(folder: Path, *log: str) -> subprocess.CompletedProcess:
    """In a fresh process, as compare_proxy.sh runs it: both scripts read their settings at import."""
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "bench" / "score_baseline.py"), str(BASELINE),
                           str(folder / "model.ptz"), *log], capture_output=True, text=True, env=os.environ.copy())


def test_adapter_logits_reproduce_the_baseline_loss(tiny_baseline):
    score_baseline, base, folder = tiny_baseline
    gpt = score_baseline.rebuild(base, str(folder / "model.ptz"), torch.device("cpu"))
    x = torch.randint(0, 400, (3, 65))
    with torch.inference_mode():
        ours = score_baseline.PerTokenNLL(gpt)(x[:, :-1], x[:, 1:])
        assert ours.shape == (3, 64)
        assert torch.allclose(ours.mean(), gpt(x[:, :-1], x[:, 1:]), rtol=1e-5)


def test_disjoint_windows_must_reproduce_the_baselines_own_loss(tiny_baseline):
    _, _, folder = tiny_baseline
    run = score(folder)
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stdout.splitlines() if line.startswith("baseline_ours_metric")]
    assert [line.split()[2] for line in lines] == ["stride:64", "stride:32"]
    assert "byte_proof:" in run.stdout and " match" in run.stdout
    disjoint = float(lines[0].split("val_loss:")[1].split()[0])
    log = folder / "baseline.log"
    log.write_text(f"final_int8_zlib_roundtrip_exact val_loss:{disjoint:.8f} val_bpb:1.0\n")
    assert score(folder, str(log)).returncode == 0
    log.write_text(f"final_int8_zlib_roundtrip_exact val_loss:{disjoint + 0.01:.8f} val_bpb:1.0\n")
    run = score(folder, str(log))
    assert run.returncode != 0 and "does not reproduce" in run.stderr
