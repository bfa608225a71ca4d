"""Evaluation section: byte counting proven against decoded text, the window schedule, sliding scores."""

import math
import random

import numpy as np
import pytest
import torch

import train_gpt
from conftest import encode_stream, random_document, tiny_args, tiny_model


@pytest.fixture(scope="module")
def stream(tokenizer):
    rng = random.Random(1)
    return torch.from_numpy(encode_stream(tokenizer, [random_document(rng) for _ in range(400)]))


def test_lut_bytes_equal_decoded_utf8_bytes_exactly(tokenizer, stream):
    luts = train_gpt.build_sentencepiece_luts(tokenizer, tokenizer.vocab_size(), torch.device("cpu"))
    assert any(tokenizer.is_byte(int(t)) for t in stream.unique())  # byte fallback is exercised
    lut = int(train_gpt.token_byte_counts(stream[:-1], stream[1:], luts).sum())
    assert lut == train_gpt.decoded_byte_count(tokenizer, stream.numpy()) == train_gpt.prove_byte_count(
        tokenizer, stream, luts)


def test_buggy_double_space_lut_is_caught(tokenizer, stream):
    """The public entries' bug: the space byte inside the piece count and added again in the loop."""
    base, space, boundary = train_gpt.build_sentencepiece_luts(tokenizer, tokenizer.vocab_size(), torch.device("cpu"))
    buggy = base.clone()
    for i in range(tokenizer.vocab_size()):
        piece = tokenizer.id_to_piece(i)
        if piece.startswith("▁") and not boundary[i]:
            buggy[i] = len(piece[1:].encode("utf-8")) + 1
    with pytest.raises(AssertionError, match="disagrees with the decoded text"):
        train_gpt.prove_byte_count(tokenizer, stream, (buggy, space, boundary))


def test_padded_ids_and_control_pieces_count_zero_bytes(tokenizer):
    base, space, boundary = train_gpt.build_sentencepiece_luts(tokenizer, 512, torch.device("cpu"))
    assert base.numel() == 512 and base[400:].eq(0).all() and boundary[400:].all()
    assert base[train_gpt.BOS_ID] == 0 and boundary[train_gpt.BOS_ID] and not space[train_gpt.BOS_ID]


@pytest.mark.parametrize("n_tokens", [2048 + 1, 4096 + 1, 5000, 5 * 512 + 7, 2049 + 100])
def test_window_schedule_scores_each_target_once_with_full_context(n_tokens):
    L, stride = 2048, 512
    count = np.zeros(n_tokens, dtype=int)
    for i, (start, first) in enumerate(train_gpt.window_schedule(n_tokens, L, stride)):
        assert start + L <= n_tokens - 1
        for off in range(first, L):
            target = start + 1 + off
            count[target] += 1
            assert i == 0 or off >= L - stride  # at least L - stride tokens of context
    assert count[0] == 0 and (count[1:] == 1).all()


def test_short_validation_stream_is_refused():
    with pytest.raises(ValueError, match="shorter than EVAL_SEQ_LEN"):
        train_gpt.window_schedule(100, 128, 32)


def test_sliding_with_stride_equal_to_length_is_plain_chunked_eval(markov_data):
    args = tiny_args(markov_data, eval_seq_len=64, eval_batch_seqs=5)
    model = tiny_model()
    tokens = train_gpt.load_val_tokens(args.val_files, 64)[:64 * 12 + 1]
    luts = tuple(torch.ones(64, dtype=t) for t in (torch.int64, torch.bool, torch.bool))
    result = train_gpt.evaluate(model, tokens, luts, args, stride=64)
    with torch.no_grad():
        plain = model(tokens[:-1].view(12, 64), tokens[1:].view(12, 64)).double().mean().item()
    assert result["tokens"] == 64 * 12 == result["bytes"]
    assert abs(result["val_loss"] - plain) < 1e-6
    sliding = train_gpt.evaluate(model, tokens, luts, args, stride=16)
    assert sliding["tokens"] == result["tokens"] and sliding["val_loss"] <= result["val_loss"] + 1e-3


@pytest.mark.parametrize("stride", [0, 129])
def test_a_stride_that_would_skip_targets_is_refused(stride):
    with pytest.raises(ValueError, match="targets go unscored"):
        train_gpt.window_schedule(1000, 128, stride)


class Recorder(torch.nn.Module):
    """Scores every target 1 nat and records, per call, whether it trained and which target positions it saw
    (the stream's tokens are their own positions)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.calls = []

    def forward(self, x, y):
        self.calls.append((torch.is_grad_enabled(), y.detach().clone()))
        return self.w * 0 + torch.ones(y.shape)


def test_score_first_adaptation_trains_only_on_targets_already_scored(markov_data):
    n = 64 * 40 + 1
    args = tiny_args(markov_data, eval_seq_len=64, eval_stride=16, eval_batch_seqs=3, ttt_epochs=2,
                     ttt_chunk_tokens=128, ttt_seq_len=32, ttt_batch_seqs=2)
    tokens, model = torch.arange(n), Recorder()
    luts = (torch.ones(n, dtype=torch.int64), torch.zeros(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool))
    result = train_gpt.evaluate(model, tokens, luts, args, adapt_weights=True)
    assert result["tokens"] == n - 1 == result["bytes"] and abs(result["val_loss"] - 1) < 1e-12
    scored_up_to, trained = 0, []
    for training, y in model.calls:
        if training:
            assert int(y.max()) <= scored_up_to  # nothing is trained on before it is scored
            trained.append(y)
        else:
            scored_up_to = max(scored_up_to, int(y.max()))
    chunks = train_gpt.chunks_of(train_gpt.window_schedule(n, 64, 16), 16, 128)
    spans = [train_gpt.scored_span(c, 64) for c in chunks[:-1]]  # the last chunk's training could help nothing
    assert len(chunks) > 3 and spans[0] == (0, 64 + 7 * 16) and spans[1] == (176, 176 + 128)
    assert len(trained) == sum(2 * math.ceil((hi - lo) // 32 / 2) for lo, hi in spans)  # epochs x steps a chunk
    assert all(y.shape[0] <= 2 and y.shape[1] == 32 and (y.diff(dim=1) == 1).all() for y in trained)


def test_adaptation_at_zero_lr_scores_exactly_as_the_fixed_model_and_learns_at_a_real_one(markov_data):
    args = tiny_args(markov_data, eval_stride=32, eval_batch_seqs=4, ttt_epochs=1, ttt_batch_seqs=4, ttt_lr=0.0)
    tokens = train_gpt.load_val_tokens(args.val_files, 64)
    luts = tuple(torch.ones(64, dtype=t) for t in (torch.int64, torch.bool, torch.bool))
    model = tiny_model()
    fixed = train_gpt.evaluate(model, tokens, luts, args)
    assert train_gpt.evaluate(model, tokens, luts, args, adapt_weights=True)["val_loss"] == fixed["val_loss"]
    args.ttt_lr = 0.05
    adapted = train_gpt.evaluate(model, tokens, luts, args, adapt_weights=True)
    assert adapted["tokens"] == fixed["tokens"] and adapted["val_loss"] < fixed["val_loss"] - 0.01
