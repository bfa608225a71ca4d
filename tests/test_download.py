"""data/cached_challenge_fineweb.py against a fake Hugging Face hub serving tiny files."""

import json
import shutil
import sys

import numpy as np
import pytest

from conftest import ROOT
from shards import write_shard

sys.path.insert(0, str(ROOT / "data"))
import cached_challenge_fineweb as dl  # noqa: E402


class FakeHub:
    """Serves files from a folder like hf_hub_download: into a cache, reused unless force_download."""

    def __init__(self, root, cache):
        self.root, self.cache, self.calls, self.fresh = root, cache, [], {}

    def __call__(self, repo_id, repo_type, subfolder, filename, force_download=False):
        assert repo_id == "willdepueoai/parameter-golf" and repo_type == "dataset"
        remote = f"{subfolder}/{filename}"
        self.calls.append((remote, force_download))
        cached = self.cache / remote
        if force_download or not cached.exists():
            cached.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.fresh.get(remote, self.root / remote), cached)
        return str(cached)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    root = tmp_path / "hub"
    shards = root / "datasets" / "datasets" / "fineweb10B_sp1024"
    for i in range(2):
        write_shard(shards / f"fineweb_train_{i:06d}.bin", np.arange(1, 500) % 1024)
    write_shard(shards / "fineweb_val_000000.bin", np.arange(1, 300))
    (root / "datasets" / "tokenizers").mkdir(parents=True)
    (root / "datasets" / "tokenizers" / "fineweb_1024_bpe.model").write_bytes(b"spm")
    (root / "datasets" / "manifest.json").write_text(json.dumps(
        {"datasets": [{"name": "fineweb10B_sp1024", "stats": {"files_val": 1, "files_train": 2}}]}))
    fake = FakeHub(root, tmp_path / "cache")
    monkeypatch.setattr(dl, "hf_hub_download", fake)
    return fake, shards, tmp_path / "out"


def test_downloads_verifies_and_resumes(hub, capsys):
    fake, _, out = hub
    assert dl.main(["--train-shards", "2", "--out", str(out)]) == 0
    local = out / "datasets" / "fineweb10B_sp1024"
    assert sorted(p.name for p in local.iterdir()) == ["fineweb_train_000000.bin", "fineweb_train_000001.bin",
                                                      "fineweb_val_000000.bin"]
    assert (out / "tokenizers" / "fineweb_1024_bpe.model").read_bytes() == b"spm"
    (local / "fineweb_train_000001.bin").write_bytes(b"\0" * 100)  # an interrupted earlier run
    fake.calls.clear()
    assert dl.main(["--train-shards", "2", "--out", str(out)]) == 0
    shard_calls = [c for c, _ in fake.calls if c.endswith(".bin")]
    assert shard_calls == ["datasets/datasets/fineweb10B_sp1024/fineweb_train_000001.bin"]
    assert "1 downloaded, 2 already complete" in capsys.readouterr().out


def test_truncated_file_in_the_cache_is_fetched_afresh(hub):
    fake, shards, out = hub
    good = shards / "fineweb_train_000000.bin"
    remote = "datasets/datasets/fineweb10B_sp1024/fineweb_train_000000.bin"
    stale = fake.cache / remote
    stale.parent.mkdir(parents=True)
    stale.write_bytes(good.read_bytes()[:-10])
    assert dl.main(["--train-shards", "1", "--out", str(out)]) == 0
    assert (remote, True) in fake.calls
    assert (out / "datasets" / "fineweb10B_sp1024" / good.name).read_bytes() == good.read_bytes()


def test_a_shard_that_stays_truncated_is_reported_and_removed(hub):
    fake, shards, out = hub
    bad = shards / "fineweb_train_000001.bin"
    bad.write_bytes(bad.read_bytes()[:-10])
    with pytest.raises(RuntimeError, match="fineweb_train_000001.bin is still invalid.*truncated or corrupt"):
        dl.main(["--train-shards", "2", "--out", str(out)])
    assert not (out / "datasets" / "fineweb10B_sp1024" / bad.name).exists()


def test_asking_for_more_shards_than_exist_is_refused(hub):
    with pytest.raises(SystemExit, match="between 0 and 2"):
        dl.main(["--train-shards", "3", "--out", str(hub[2])])
