"""Quantization section: GPTQ vs round-to-nearest, packing, the byte budget."""

import pytest
import torch

import train_gpt
from conftest import PLAIN_INPUTS, TINY_MODEL, tiny_args, tiny_model


def test_pack_unpack_is_bit_exact_for_every_kind():
    arrays = {"a:q": torch.randint(-31, 32, (70, 33), dtype=torch.int8), "a:s": torch.rand(70).half(),
              "e:q": torch.randint(-127, 128, (9, 5), dtype=torch.int8), "e:s": torch.rand(9).half(),
              "n:f": torch.randn(64).half(), "x:f": torch.randn(3, 4)}
    config = dict(TINY_MODEL)
    got_config, got = train_gpt.unpack_artifact(train_gpt.pack_artifact(config, arrays))
    assert got_config == config and sorted(got) == sorted(arrays)
    assert list(got)[:2] == ["a:q", "e:q"]  # integer arrays first: zstd packs them tighter
    for k in arrays:
        assert got[k].dtype == arrays[k].dtype and torch.equal(got[k], arrays[k])


def test_body_split_into_frames_roundtrips_and_truncation_is_refused(monkeypatch):
    monkeypatch.setattr(train_gpt, "PACK_CHUNK", 1000)
    arrays = {"w:q": torch.randint(-7, 8, (64, 100), dtype=torch.int8), "w:s": torch.rand(64).half()}
    blob = train_gpt.pack_artifact(dict(TINY_MODEL), arrays)
    _, got = train_gpt.unpack_artifact(blob)
    assert all(torch.equal(got[k], arrays[k]) for k in arrays)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        train_gpt.unpack_artifact(blob[:-1])


def test_corrupt_artifact_is_refused():
    import zstandard
    with pytest.raises(ValueError, match="not a GDN-Hybrid artifact"):
        train_gpt.unpack_artifact(zstandard.ZstdCompressor().compress(b"something else entirely"))


def correlated_layer(seed=0, n=4096, fan_in=128, fan_out=96):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, fan_in // 4, generator=gen) @ torch.randn(fan_in // 4, fan_in, generator=gen)
    X += 0.1 * torch.randn(n, fan_in, generator=gen)
    return X, torch.randn(fan_out, fan_in, generator=gen) * 0.05


def dequant(q, s):
    return q.float() * s.float()[:, None]


def test_int6_values_stay_in_range():
    X, W = correlated_layer()
    for q, _ in (train_gpt.quantize_gptq(W, X.T @ X / len(X), 6, 32, 0.01), train_gpt.quantize_rtn(W, 6)):
        assert q.dtype == torch.int8 and q.min() >= -31 and q.max() <= 31


def test_an_all_zero_row_quantizes_to_zeros_with_a_usable_scale():
    X, W = correlated_layer()
    W[3] = 0
    for q, s in (train_gpt.quantize_gptq(W, X.T @ X / len(X), 5, 32, 0.01), train_gpt.quantize_rtn(W, 5)):
        assert (q[3] == 0).all() and s[3] > 0 and torch.isfinite(dequant(q, s)).all()


def test_gptq_output_error_is_well_below_round_to_nearest():
    X, W = correlated_layer()
    ref = X @ W.T
    err = lambda q, s: ((X @ dequant(q, s).T - ref).norm() / ref.norm()).item()  # noqa: E731
    gptq = err(*train_gpt.quantize_gptq(W, X.T @ X / len(X), 6, 32, 0.01))
    rtn = err(*train_gpt.quantize_rtn(W, 6))
    assert gptq < 0.6 * rtn, (gptq, rtn)


def test_budget_fails_one_byte_over_and_passes_at_the_cap():
    assert train_gpt.check_budget(15_950_000, 50_000, 16_000_000) == 16_000_000
    with pytest.raises(train_gpt.ArtifactTooLarge, match="1 bytes over the 16,000,000-byte cap"):
        train_gpt.check_budget(15_950_001, 50_000, 16_000_000)


@pytest.mark.parametrize("features", [{}, PLAIN_INPUTS])
def test_quantized_model_reloads_from_bytes_close_to_float(markov_data, features):
    args = tiny_args(markov_data)
    model = tiny_model(**features)
    calib = train_gpt.generate_calibration(model, 4, 32, 1.0, 0, torch.device("cpu"))
    assert calib.shape == (4, 32) and (calib[:, 0] == train_gpt.BOS_ID).all()
    hessians = train_gpt.collect_hessians(model, calib, 2)
    assert "attn.q.weight" in hessians and "blocks.0.mixer.qkv.weight" in hessians
    blob = train_gpt.pack_artifact(model.cfg, train_gpt.quantize_model(model, hessians, (6, 6), args))
    path = markov_data / "artifact.ptz"
    path.write_bytes(blob)
    reloaded = train_gpt.load_artifact(str(path), torch.device("cpu"))
    ids = calib[:, :-1]
    with torch.no_grad():
        a, b = model(ids, calib[:, 1:]).mean(), reloaded(ids, calib[:, 1:]).mean()
    assert a != b and abs(a - b) < 0.05 * a


def test_a_projection_without_calibration_statistics_is_an_error(markov_data):
    model = tiny_model()
    hessians = train_gpt.collect_hessians(model, torch.full((2, 16), train_gpt.BOS_ID), 2)
    del hessians["blocks.0.mlp.fc.weight"]
    with pytest.raises(RuntimeError, match="blocks.0.mlp.fc.weight"):
        train_gpt.quantize_model(model, hessians, (6, 6), tiny_args(markov_data))


def test_fit_artifact_finds_the_first_rung_that_fits_else_gives_the_smallest_to_refuse(markov_data, capsys):
    model = tiny_model()
    hessians = train_gpt.collect_hessians(model, torch.randint(0, 64, (4, 32)), 2)
    args = tiny_args(markov_data)
    sizes = {bits: len(train_gpt.pack_artifact(model.cfg, train_gpt.quantize_model(model, hessians, bits, args)))
             for bits in train_gpt.QUANT_LADDER}
    assert sizes[(6, 6)] > sizes[(5, 5)] > sizes[(4, 4)]
    for i, bits in enumerate(train_gpt.QUANT_LADDER):
        args.artifact_cap_bytes = sizes[bits] + 1000
        assert len(train_gpt.fit_artifact(model, hessians, model.cfg, 1000, args)) == sizes[bits]
        out = capsys.readouterr().out
        assert f"quant_choice: mlp:int{bits[0]} other:int{bits[1]} " in out
        assert out.count("quant_rung:") == len(train_gpt.QUANT_LADDER) and out.count(" over cap") == i
    args.artifact_cap_bytes = sizes[(4, 4)] + 999
    blob = train_gpt.fit_artifact(model, hessians, model.cfg, 1000, args)
    assert len(blob) == sizes[(4, 4)]
    with pytest.raises(train_gpt.ArtifactTooLarge, match="1 bytes over the"):
        train_gpt.check_budget(len(blob), 1000, args.artifact_cap_bytes)
