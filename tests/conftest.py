"""Shared fixtures: a real SentencePiece tokenizer with the challenge's settings, shards, tiny configs."""

import logging
import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "data")]
if not torch.cuda.is_available():  # Triton's interpreter runs our kernels on the CPU (read when they are defined)
    os.environ.setdefault("TRITON_INTERPRET", "1")

import train_gpt  # noqa: E402
from build_proxy import TRAINER_SETTINGS  # noqa: E402
from shards import write_shard  # noqa: E402

WORDS = ("the of and to in is was for on that with as by at from his her it an were are which this be or "
         "has had not but one first new two after also who its than other been more into all their time "
         "film movie story great bad good people world war city team season game music").split()
ODD = ["café", "naïve", "Zürich", "東京", "中文字", "😀", "🚀✨", "ℵ₀", "Ωmega", "ǅ", "\u2028", "ﬁ", "𝔘𝔫𝔦"]


def random_document(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(5, 60)):
        r = rng.random()
        if r < 0.70:
            parts.append(rng.choice(WORDS).capitalize() if rng.random() < 0.1 else rng.choice(WORDS))
        elif r < 0.80:
            parts.append(str(rng.randint(0, 10**rng.randint(1, 7))))
        elif r < 0.90:
            parts.append(rng.choice(ODD))
        else:
            parts.append(rng.choice(["  ", "\n", "\t", "   spaced", "\n\n", ".", ",", "!?"]))
    return " ".join(parts)


TRAINED = {}  # the tokenizer below, trained once per pytest run


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> spm.SentencePieceProcessor:
    if "tokenizer" not in TRAINED:
        rng = random.Random(0)
        folder = tmp_path_factory.mktemp("tok")
        docs = [random_document(rng) for _ in range(3000)]
        spm.SentencePieceTrainer.train(sentence_iterator=iter(docs), model_prefix=str(folder / "tok"), vocab_size=400,
                                       minloglevel=2, num_threads=1, **TRAINER_SETTINGS)
        sp = spm.SentencePieceProcessor(model_file=str(folder / "tok.model"))
        sp.model_path = str(folder / "tok.model")
        TRAINED["tokenizer"] = sp
    return TRAINED["tokenizer"]


def encode_stream(sp, docs) -> np.ndarray:
    """Documents as the shards hold them: BOS + ids, concatenated."""
    return np.concatenate([[train_gpt.BOS_ID] + sp.encode(d) for d in docs]).astype(np.int64)


def markov_tokens(n: int, vocab: int, seed: int = 0, p: float = 0.9) -> np.ndarray:
    """Low-entropy synthetic text: mostly next = (7 * prev + 3) % vocab, with BOS every ~100 tokens."""
    rng = np.random.default_rng(seed)
    out = np.empty(n, dtype=np.int64)
    out[0] = train_gpt.BOS_ID
    for i in range(1, n):
        if rng.random() < 0.01:
            out[i] = train_gpt.BOS_ID
        else:
            out[i] = (7 * out[i - 1] + 3) % vocab if rng.random() < p else rng.integers(4, vocab)
    return out


TINY_MODEL = dict(vocab_size=64, model_dim=64, num_heads=2, num_kv_heads=1, gdn_per_group=1, mlp_mult=2,
                  conv_size=4, swa_window=16, doc_reset=1, smear=1, x0_mix=1, rope_base=10000.0,
                  qk_gain_init=1.5, logit_softcap=30.0)
PLAIN_INPUTS = dict(smear=0, x0_mix=0)  # without the previous-token gate and the per-block input embedding
TINY_ENV = dict(VOCAB_SIZE="400", MODEL_DIM="64", NUM_HEADS="2", NUM_KV_HEADS="1", GDN_PER_GROUP="1",
                MLP_MULT="2", SWA_WINDOW="16", TRAIN_SEQ_LEN="64", MICRO_BATCH_SEQS="4", TRAIN_BATCH_TOKENS="512",
                ITERATIONS="25", MAX_WALLCLOCK_SECONDS="0", COMPILE_WARMUP_STEPS="1", TRAIN_LOG_EVERY="5",
                EVAL_SEQ_LEN="64", EVAL_STRIDE="16", EVAL_BATCH_SEQS="8", CALIB_SEQS="4", CALIB_LEN="32",
                GPTQ_BLOCK="32", TTT_CHUNK_TOKENS="256", TTT_SEQ_LEN="64", RUN_ID="e2e",
                OMP_NUM_THREADS="1")  # main's tiny run, for the conftest tokenizer


def tiny_args(data_dir: Path, **overrides) -> train_gpt.Hyperparameters:
    args = train_gpt.Hyperparameters()
    settings = dict(TINY_MODEL, train_files=str(data_dir / "fineweb_train_*.bin"),
                    val_files=str(data_dir / "fineweb_val_*.bin"), train_seq_len=64, micro_batch_seqs=8,
                    train_batch_tokens=512, iterations=60, max_wallclock_seconds=0.0, compile_warmup_steps=1,
                    lr_warmup_steps=5, warmdown_frac=0.3, train_log_every=20, eval_seq_len=64, eval_stride=16,
                    eval_batch_seqs=8, matrix_lr=0.02, embed_lr=0.05, scalar_lr=0.02, ema_decay=0.9,
                    calib_seqs=4, calib_len=32, gptq_block=32, ttt_chunk_tokens=256, ttt_seq_len=64)
    settings.update(overrides)
    for k, v in settings.items():
        setattr(args, k, v)
    return args


class PrintLines(logging.Handler):
    """Prints each line to the stdout of the moment, the one capsys reads in a test."""

    def emit(self, record):
        print(self.format(record), flush=True)


@pytest.fixture(autouse=True)
def train_gpt_log():
    """train_gpt's log lines printed as a run prints them (its levels, stdout); no handler outlives the test."""
    train_gpt.start_logging()
    logging.basicConfig(handlers=[PrintLines()], force=True)
    yield
    logging.basicConfig(handlers=[], force=True)


@pytest.fixture
def markov_data(tmp_path) -> Path:
    write_shard(tmp_path / "fineweb_train_000000.bin", markov_tokens(30_000, 64, seed=1))
    write_shard(tmp_path / "fineweb_val_000000.bin", markov_tokens(2_000, 64, seed=2))
    return tmp_path


def tiny_model(seed: int = 0, **overrides) -> train_gpt.GDNHybrid:
    """A tiny model whose zero-initialised output projections are randomised, so every path carries signal."""
    torch.manual_seed(seed)
    model = train_gpt.GDNHybrid(dict(TINY_MODEL, **overrides))
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(std=0.1)
    return model
