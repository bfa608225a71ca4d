"""Data section: shard reading and its errors, the tokenizer check, the distributed loader."""

import time

import numpy as np
import pytest
import torch

import train_gpt
from shards import write_shard


def test_shard_reads_back_exactly(tmp_path):
    tokens = np.random.default_rng(0).integers(0, 1024, 5000)
    write_shard(tmp_path / "s.bin", tokens)
    assert np.array_equal(train_gpt.read_shard(tmp_path / "s.bin"), tokens)


def corrupt(path, offset, value):
    raw = bytearray(path.read_bytes())
    raw[offset:offset + 4] = np.int32(value).tobytes()
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage, message", [
    (lambda p: corrupt(p, 0, 12345), "bad magic 12345"),
    (lambda p: corrupt(p, 4, 2), "unsupported version 2"),
    (lambda p: p.write_bytes(p.read_bytes()[:-2]), "truncated or corrupt"),
    (lambda p: p.write_bytes(p.read_bytes()[:100]), "truncated header"),
])
def test_bad_shards_fail_with_their_own_message(tmp_path, damage, message):
    path = tmp_path / "fineweb_train_000000.bin"
    write_shard(path, np.arange(100))
    damage(path)
    with pytest.raises(ValueError, match=message) as err:
        train_gpt.read_shard(path)
    assert str(path) in str(err.value)


def test_missing_shards_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="build_proxy.py"):
        train_gpt.shard_files(str(tmp_path / "fineweb_val_*.bin"))


def test_token_ids_beyond_vocab_are_refused(tmp_path):
    write_shard(tmp_path / "fineweb_val_000000.bin", np.array([1, 5, 2000]))
    with pytest.raises(ValueError, match="fineweb_val_000000.bin at token 2: token id 2000 >= vocab size 1024"):
        train_gpt.load_val_tokens(str(tmp_path / "fineweb_val_*.bin"), 1024)


def test_token_count_checks_every_shard_header_not_only_the_first(tmp_path):
    for i in range(3):
        write_shard(tmp_path / f"fineweb_train_00000{i}.bin", np.arange(100))
    corrupt(tmp_path / "fineweb_train_000001.bin", 0, 12345)
    with pytest.raises(ValueError, match="fineweb_train_000001.bin: bad magic 12345"):
        train_gpt.count_tokens(str(tmp_path / "fineweb_train_*.bin"))


def test_training_stream_refuses_token_ids_beyond_vocab_where_it_reads_them(tmp_path):
    write_shard(tmp_path / "fineweb_train_000000.bin", np.arange(100))
    write_shard(tmp_path / "fineweb_train_000001.bin", np.array([1, 2, 3, 2000]))
    stream = train_gpt.TokenStream(str(tmp_path / "fineweb_train_*.bin"), 1024)
    assert np.array_equal(stream.take(102), [*range(100), 1, 2])
    with pytest.raises(ValueError, match=r"fineweb_train_000001.bin at token 3: token id 2000 >= vocab size 1024"):
        stream.take(2)  # the chunk starts at token 2 of the file; the error names the bad token, 3


def test_tokenizer_vocab_must_match_model(tokenizer):
    args = train_gpt.Hyperparameters()
    args.tokenizer_path, args.vocab_size = tokenizer.model_path, 1024
    with pytest.raises(ValueError, match="has 400 pieces but VOCAB_SIZE=1024"):
        train_gpt.load_tokenizer(args)


def test_ranks_read_disjoint_slices_of_one_stream(tmp_path):
    stream = np.arange(10_000) % 1000
    write_shard(tmp_path / "fineweb_train_000000.bin", stream[:3000])
    write_shard(tmp_path / "fineweb_train_000001.bin", stream[3000:])
    pattern = str(tmp_path / "fineweb_train_*.bin")
    loaders = [train_gpt.DistributedLoader(pattern, 1000, r, 2, 4, 16, torch.device("cpu")) for r in range(2)]
    seen = []
    for _ in range(3):
        for loader in loaders:
            x, y = loader.next_batch()
            assert x.shape == (4, 16) and torch.equal(x.flatten()[1:], y.flatten()[:-1])
            seen.append(torch.cat([x.flatten(), y.flatten()[-1:]]))
    span = 4 * 16 + 1
    assert torch.equal(torch.cat(seen), torch.from_numpy(stream[:6 * span]))  # crosses the shard boundary


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: the point is not waiting for one")
def test_loader_returns_without_waiting_for_queued_gpu_work(tmp_path):
    stream = np.arange(200_000) % 1000
    write_shard(tmp_path / "fineweb_train_000000.bin", stream)
    seqs, seq_len, span = 48, 2048, 48 * 2048 + 1
    loader = train_gpt.DistributedLoader(str(tmp_path / "fineweb_train_*.bin"), 1000, 0, 1, seqs, seq_len,
                                         torch.device("cuda"))
    loader.next_batch()
    torch.cuda.synchronize()
    torch.cuda._sleep(1 << 31)  # ~1 s of queued GPU work, as while a training step runs
    t = time.perf_counter()
    x, y = loader.next_batch()
    waited = time.perf_counter() - t
    torch.cuda.synchronize()
    assert waited < 0.2, f"next_batch blocked {waited:.2f}s behind the GPU's queue"
    assert torch.equal(x.flatten().cpu(), torch.from_numpy(stream[span:2 * span - 1]))
