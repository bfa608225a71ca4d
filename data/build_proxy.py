"""Builds a FineWeb-like SP1024 export from JSONL(.zst) documents ({"text": ...} per line).

  python3 data/build_proxy.py --inputs proxy_docs.jsonl.zst --out data/proxy

The first --val-docs documents of the first input are validation, all others training (the challenge
does the same with its first 50,000). Unless --tokenizer names an existing model, a SentencePiece
BPE tokenizer is trained on training documents only, with the challenge's trainer settings. Each
document becomes BOS + its token ids. Output, for train_gpt.py's DATA_PATH / TOKENIZER_PATH:
  OUT/fineweb_val_000000.bin, OUT/fineweb_train_NNNNNN.bin, OUT/tokenizer.model, OUT/manifest.json
The same inputs and settings give byte-identical shards.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
from itertools import islice
from pathlib import Path

import numpy as np
import sentencepiece as spm
import zstandard
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shards import sha256_file, write_shard  # noqa: E402

BOS_ID = 1
TRAINER_SETTINGS = dict(model_type="bpe", character_coverage=0.999, byte_fallback=True, split_digits=True,
                        normalization_rule_name="nmt_nfkc", add_dummy_prefix=False, pad_id=0, bos_id=1,
                        eos_id=2, unk_id=3, hard_vocab_limit=False)
QUIET = dict(minloglevel=2)  # the trainer otherwise logs every byte piece


def read_docs(path: str | Path):
    """Yields each document's text; a .zst file is decompressed as it streams."""
    with open(path, "rb") as raw:
        stream = zstandard.ZstdDecompressor().stream_reader(raw) if str(path).endswith(".zst") else raw
        for lineno, line in enumerate(io.TextIOWrapper(stream, encoding="utf-8"), 1):
            if line.strip():
                try:
                    yield json.loads(line)["text"]
                except (json.JSONDecodeError, KeyError) as e:
                    raise ValueError(f"{path}:{lineno}: not a {{\"text\": ...}} JSON line ({e})") from e


def all_docs(inputs: list[str]):
    for path in inputs:
        yield from read_docs(path)


def train_tokenizer(inputs, val_docs: int, train_docs: int, vocab_size: int, out: Path) -> Path:
    texts = (t.replace("\x00", " ").strip() for t in islice(all_docs(inputs), val_docs, val_docs + train_docs))
    model = io.BytesIO()  # no model_prefix: a temporary path would end up inside the .model file
    spm.SentencePieceTrainer.train(sentence_iterator=(t for t in texts if t), model_writer=model,
                                   vocab_size=vocab_size, num_threads=os.cpu_count(), **TRAINER_SETTINGS, **QUIET)
    out.write_bytes(model.getvalue())
    return out


class ShardWriter:
    def __init__(self, out: Path, split: str, shard_tokens: int):
        self.out, self.split, self.shard_tokens = out, split, shard_tokens
        self.buf, self.buffered, self.files, self.docs, self.tokens, self.bytes = [], 0, [], 0, 0, 0

    def add(self, text: str, ids: list[int]):
        self.buf.append(np.asarray([BOS_ID] + ids, dtype=np.uint16))
        self.docs, self.bytes = self.docs + 1, self.bytes + len(text.encode("utf-8"))
        self.tokens, self.buffered = self.tokens + len(ids) + 1, self.buffered + len(ids) + 1
        while self.buffered >= self.shard_tokens:
            flat = np.concatenate(self.buf)
            self.write(flat[:self.shard_tokens])
            self.buf, self.buffered = [flat[self.shard_tokens:]], len(flat) - self.shard_tokens

    def write(self, tokens: np.ndarray):
        path = self.out / f"fineweb_{self.split}_{len(self.files):06d}.bin"
        write_shard(path, tokens)
        self.files.append({"file": path.name, "tokens": int(tokens.size), "sha256": sha256_file(path)})

    def close(self) -> dict:
        rest = np.concatenate(self.buf) if self.buf else np.zeros(0, np.uint16)
        if rest.size:
            self.write(rest)
        return {"docs": self.docs, "tokens": self.tokens, "text_bytes": self.bytes, "shards": self.files}


def build(inputs, out: Path, val_docs: int, tokenizer: str | None, tokenizer_train_docs: int,
          vocab_size: int, shard_tokens: int, batch_docs: int = 1024) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("fineweb_*.bin"):
        old.unlink()
    tok_path = out / "tokenizer.model"
    if tokenizer:
        shutil.copy(tokenizer, tok_path)
    else:
        print(f"training tokenizer on {tokenizer_train_docs:,} training documents ...", flush=True)
        train_tokenizer(inputs, val_docs, tokenizer_train_docs, vocab_size, tok_path)
    sp = spm.SentencePieceProcessor(model_file=str(tok_path))
    if sp.vocab_size() != vocab_size:
        raise ValueError(f"tokenizer {tok_path} has {sp.vocab_size()} pieces, expected {vocab_size}")
    writers = {"val": ShardWriter(out, "val", shard_tokens), "train": ShardWriter(out, "train", shard_tokens)}
    docs = all_docs(inputs)
    seen = 0
    with tqdm(desc="tokenizing", unit="doc", mininterval=5) as bar:
        while batch := list(islice(docs, batch_docs)):
            for text, ids in zip(batch, sp.encode(batch, out_type=int, num_threads=os.cpu_count())):
                writers["val" if seen < val_docs else "train"].add(text, ids)
                seen += 1
            bar.update(len(batch))
    if seen <= val_docs:
        raise ValueError(f"only {seen} documents: nothing left for training after {val_docs} validation documents")
    manifest = {"inputs": [{"file": Path(p).name, "sha256": sha256_file(p)} for p in inputs],
                "tokenizer": {"file": tok_path.name, "sha256": sha256_file(tok_path), "vocab_size": vocab_size,
                              "trained_on_docs": None if tokenizer else tokenizer_train_docs},
                "val_docs": val_docs, "bos_id": BOS_ID, "shard_tokens": shard_tokens,
                "splits": {name: w.close() for name, w in writers.items()}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    for name, s in manifest["splits"].items():
        print(f"{name}: {s['docs']:,} docs, {s['tokens']:,} tokens, {s['text_bytes']:,} text bytes, "
              f"{len(s['shards'])} shard(s)")
    return manifest


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--inputs", nargs="+", required=True, help="JSONL or JSONL.zst files, in order")
    p.add_argument("--out", type=Path, default=Path("data/proxy"))
    p.add_argument("--val-docs", type=int, default=5000)
    p.add_argument("--tokenizer", help="an existing SentencePiece .model to use instead of training one")
    p.add_argument("--tokenizer-train-docs", type=int, default=40_000)
    p.add_argument("--vocab-size", type=int, default=1024)
    p.add_argument("--shard-tokens", type=int, default=10**8)
    a = p.parse_args(argv)
    build(a.inputs, a.out, a.val_docs, a.tokenizer, a.tokenizer_train_docs, a.vocab_size, a.shard_tokens)


if __name__ == "__main__":
    main()
