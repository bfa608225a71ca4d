"""Quantization section: GPTQ vs round-to-nearest, packing and its checksum, the byte budget."""

import random

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


def test_every_single_bit_flip_anywhere_in_the_file_is_refused():
    """A flip in the magic says so; anywhere else the SHA-256 of the bytes after it no longer holds."""
    arrays = {"w:q": torch.randint(-31, 32, (64, 100), dtype=torch.int8), "w:s": torch.rand(64).half(),
              "n:f": torch.randn(64).half()}
    blob = train_gpt.pack_artifact(dict(TINY_MODEL), arrays)
    rng = random.Random(0)
    for bit in [0, 8 * len(blob) - 1] + rng.sample(range(8 * len(blob)), 60):
        bad = bytearray(blob)
        bad[bit // 8] ^= 1 << bit % 8
        with pytest.raises(ValueError, match="checksum mismatch|not a GDN-Hybrid artifact"):
            train_gpt.unpack_artifact(bytes(bad))


def test_an_artifact_replaces_the_file_only_once_it_reads_back_and_unpacks(tmp_path):
    blob = train_gpt.pack_artifact(dict(TINY_MODEL), {"n:f": torch.randn(64).half()})
    path = tmp_path / "model.ptz"
    path.write_bytes(b"an earlier good artifact")
    with pytest.raises(ValueError, match="checksum mismatch"):
        train_gpt.write_artifact(str(path), blob[:-1])
    assert path.read_bytes() == b"an earlier good artifact" and sorted(tmp_path.iterdir()) == [path]
    train_gpt.write_artifact(str(path), blob)
    assert path.read_bytes() == blob and sorted(tmp_path.iterdir()) == [path]


def correlated_layer(seed=0, n=4096, fan_in=128, fan_out=96):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, fan_in // 4, generator=gen) @ torch.randn(fan_in // 4, fan_in, generator=gen)
    X += 0.1 * torch.randn(n, fan_in, generator=gen)
    return X, torch.randn(fan_out, fan_in, generator=gen) * 0.05


def dequant(q, s):
    return q.float() * s.float()[:, None]


def gptq(W, X, k, bits=6):
    qmax = 2 ** (bits - 1) - 1
    step = train_gpt.row_steps(W, k, qmax)
    W, Hinv = train_gpt.gptq_prepare(W, X.T @ X / len(X), 0.01)
    return train_gpt.quantize_gptq(W, Hinv, step, qmax, 32), step


def rtn(W, k, bits=6):
    qmax = 2 ** (bits - 1) - 1
    step = train_gpt.row_steps(W, k, qmax)
    return train_gpt.quantize_rtn(W, step, qmax), step


@pytest.mark.parametrize("k", [1.0, 12.0])
def test_int6_values_stay_in_range(k):
    X, W = correlated_layer()
    for q, _ in (gptq(W, X, k), rtn(W, k)):
        assert q.dtype == torch.int8 and q.min() >= -31 and q.max() <= 31


def test_one_step_per_tensor_raised_only_where_a_row_would_clip():
    X, W = correlated_layer()
    W[5, 7] = 40 * W[5].abs().max()  # an outlier larger than k * rms: its row's step grows to keep it
    step = train_gpt.row_steps(W, 12.0, 31)
    plain = [i for i in range(len(W)) if i != 5]
    assert torch.all(step[plain] == (12.0 * W.square().mean().sqrt() / 31).half().float())
    assert step[5] * 31 >= 0.999 * W[5].abs().max()
    q, s = rtn(W, 12.0)
    assert (dequant(q, s) - W).abs().max() <= 0.5 * s.float().max() + 1e-6  # no weight is clipped


def test_packed_bytes_fall_steadily_as_the_step_grows():
    """An MLP-sized int6 tensor with rows of unequal spread, at steps 0.1% apart: the fit aims by the size, so
    it must fall with every coarser step (zstd's short matches made it jump by up to 2% here)."""
    gen = torch.Generator().manual_seed(0)
    W = torch.randn(1536, 512, generator=gen) * torch.exp(0.4 * torch.randn(1536, 1, generator=gen))
    sizes = []
    for k in torch.linspace(9.25, 9.37, 9).tolist():
        step = train_gpt.row_steps(W, k, 31)
        arrays = {"w:q": train_gpt.quantize_rtn(W, step, 31), "w:s": step.half()}
        sizes.append(train_gpt.artifact_section_bytes(train_gpt.pack_artifact(dict(TINY_MODEL), arrays))["gdn"])
    assert all(a > b for a, b in zip(sizes, sizes[1:])), sizes


def test_an_all_zero_row_quantizes_to_zeros_with_a_usable_scale():
    X, W = correlated_layer()
    W[3] = 0
    for q, s in (gptq(W, X, 12.0, 5), rtn(W, 12.0, 5)):
        assert (q[3] == 0).all() and s[3] > 0 and torch.isfinite(dequant(q, s)).all()


def test_gptq_output_error_is_well_below_round_to_nearest():
    X, W = correlated_layer()
    ref = X @ W.T
    err = lambda q, s: ((X @ dequant(q, s).T - ref).norm() / ref.norm()).item()  # noqa: E731
    assert err(*gptq(W, X, 12.0)) < 0.6 * err(*rtn(W, 12.0))


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
    arrays = train_gpt.quantize_model(train_gpt.quant_plan(model, hessians, args), 1.0, args)
    assert arrays["embed.weight:q"].abs().max() == 127 and arrays["blocks.0.mlp.fc.weight:q"].abs().max() <= 31
    path = markov_data / "artifact.ptz"
    path.write_bytes(train_gpt.pack_artifact(model.cfg, arrays))
    reloaded = train_gpt.model_from_blob(path.read_bytes(), torch.device("cpu"))
    ids = calib[:, :-1]
    with torch.no_grad():
        a, b = model(ids, calib[:, 1:]).mean(), reloaded(ids, calib[:, 1:]).mean()
    assert a != b and abs(a - b) < 0.05 * a


def test_a_projection_without_calibration_statistics_is_an_error(markov_data):
    model = tiny_model()
    hessians = train_gpt.collect_hessians(model, torch.full((2, 16), train_gpt.BOS_ID), 2)
    del hessians["blocks.0.mlp.fc.weight"]
    with pytest.raises(RuntimeError, match="blocks.0.mlp.fc.weight"):
        train_gpt.quant_plan(model, hessians, tiny_args(markov_data))


def fit_setup(markov_data):
    model = tiny_model()
    hessians = train_gpt.collect_hessians(model, torch.randint(0, 64, (4, 32)), 2)
    args = tiny_args(markov_data, fit_slack_bytes=400)
    plan = train_gpt.quant_plan(model, hessians, args)
    size = lambda scale: len(train_gpt.pack_artifact(model.cfg, train_gpt.quantize_model(plan, scale, args)))  # noqa: E731
    return model, hessians, args, size


@pytest.mark.parametrize("embed_k", [0.0, 12.0])
def test_coarser_steps_pack_smaller_in_every_group_with_a_factor(markov_data, embed_k):
    model, hessians, args, _ = fit_setup(markov_data)
    args.quant_k_embed = embed_k  # 0: the embedding stays at its row-max step whatever the scale
    plan = train_gpt.quant_plan(model, hessians, args)
    fine, coarse = (train_gpt.artifact_section_bytes(train_gpt.pack_artifact(
        model.cfg, train_gpt.quantize_model(plan, s, args))) for s in (0.5, 2.0))
    assert set(fine) == set(train_gpt.SECTIONS)
    assert all(coarse[g] < fine[g] for g in ("mlp", "attn", "gdn"))
    assert (coarse["embed"] < fine["embed"]) == (embed_k > 0) and (coarse["embed"] <= fine["embed"])


@pytest.mark.parametrize("room", [-6000, -1500, 2500, 9000])
def test_fit_lands_in_the_band_under_the_cap(markov_data, capsys, room):
    """Caps above and below the size at the factors as set: the fit moves the steps either way."""
    model, hessians, args, size = fit_setup(markov_data)
    args.artifact_cap_bytes = size(1.0) + 1000 + room
    blob = train_gpt.fit_artifact(model, hessians, model.cfg, 1000, args)
    total = len(blob) + 1000
    assert args.artifact_cap_bytes - args.fit_slack_bytes <= total <= args.artifact_cap_bytes
    out = capsys.readouterr().out
    assert f"bytes_total:{total:,} fits" in out and 1 <= out.count("quant_fit: try:") <= train_gpt.FIT_TRIES
    config, arrays = train_gpt.unpack_artifact(blob)
    assert config == model.cfg and "embed.weight:q" in arrays


def test_fit_refuses_when_nothing_fits_and_stops_at_the_finest_steps_when_all_fit(markov_data, capsys):
    model, hessians, args, size = fit_setup(markov_data)
    coarsest, finest = (size(2 ** x) for x in reversed(train_gpt.FIT_LOG2_SCALES))
    args.artifact_cap_bytes = coarsest + 1000 - 3000  # packed sizes are not strictly monotone: a clear miss
    blob = train_gpt.fit_artifact(model, hessians, model.cfg, 1000, args)
    assert len(blob) == coarsest and "nothing fits the cap" in capsys.readouterr().out
    with pytest.raises(train_gpt.ArtifactTooLarge, match="3,000 bytes over the"):
        train_gpt.check_budget(len(blob), 1000, args.artifact_cap_bytes)
    args.artifact_cap_bytes = finest + 1000 + 10 * args.fit_slack_bytes
    assert len(train_gpt.fit_artifact(model, hessians, model.cfg, 1000, args)) == finest
    assert "scale:0.1250" in capsys.readouterr().out.splitlines()[-1]


# The tiny model's quantization at the factors as set, as main produced it at 908f3ee on 2 CPU cores: packed bytes
# and the weights' relative squared error after the round trip. A reorganised train_gpt.py must reproduce them.
RECORDED_QUANT_BYTES, RECORDED_QUANT_ERROR = 57_674, 0.0192344


def test_quantization_reproduces_the_recorded_bytes_and_error(markov_data):
    model, hessians, args, _ = fit_setup(markov_data)
    arrays = train_gpt.quantize_model(train_gpt.quant_plan(model, hessians, args), 1.0, args)
    blob = train_gpt.pack_artifact(model.cfg, arrays)
    state, ref = train_gpt.dequantize(arrays), model.state_dict()
    error = (sum((state[k] - ref[k]).square().sum() for k in state) / sum(ref[k].square().sum() for k in state)).item()
    assert abs(len(blob) - RECORDED_QUANT_BYTES) <= 0.002 * RECORDED_QUANT_BYTES, (len(blob), error)
    assert abs(error - RECORDED_QUANT_ERROR) <= 0.01 * RECORDED_QUANT_ERROR, (len(blob), error)
