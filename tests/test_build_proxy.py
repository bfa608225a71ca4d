"""data/build_proxy.py: deterministic, challenge-format shards with BOS per document and a fixed val split."""

import json
import random

import numpy as np
import pytest
import sentencepiece as spm
import zstandard

import build_proxy
import train_gpt
from conftest import random_document


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = random.Random(5)
    docs = [random_document(rng) for _ in range(1500)]
    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl.zst"
    raw = "".join(json.dumps({"text": d}) + "\n" for d in docs).encode()
    path.write_bytes(zstandard.ZstdCompressor().compress(raw))
    return path, docs


def build(corpus_path, out, **kw):
    settings = dict(val_docs=40, tokenizer=None, tokenizer_train_docs=2000, vocab_size=400, shard_tokens=20_000)
    return build_proxy.build([str(corpus_path)], out, **{**settings, **kw})


def test_same_input_gives_byte_identical_export(corpus, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    build(corpus[0], a), build(corpus[0], b)
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir()) and "fineweb_train_000001.bin" in names
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_shards_hold_bos_plus_ids_per_document_and_val_is_the_first_documents(corpus, tmp_path):
    path, docs = corpus
    manifest = build(path, tmp_path)
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "tokenizer.model"))
    val = train_gpt.read_shard(tmp_path / "fineweb_val_000000.bin")
    expected = np.concatenate([[train_gpt.BOS_ID] + sp.encode(d) for d in docs[:40]])
    assert np.array_equal(val, expected)
    train = np.concatenate([train_gpt.read_shard(tmp_path / s["file"]) for s in manifest["splits"]["train"]["shards"]])
    assert train[0] == train_gpt.BOS_ID and (train == train_gpt.BOS_ID).sum() == len(docs) - 40
    assert manifest["splits"]["train"]["tokens"] == train.size and all(
        s["tokens"] <= 20_000 for s in manifest["splits"]["train"]["shards"])
    assert manifest["tokenizer"]["vocab_size"] == 400 and len(manifest["tokenizer"]["sha256"]) == 64


def test_bad_json_line_names_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"txt": "oops"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not a"):
        list(build_proxy.read_docs(bad))
