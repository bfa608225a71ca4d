"""Downloads the challenge's published FineWeb SP1024 export from Hugging Face, resumably.

  python3 data/cached_challenge_fineweb.py [--train-shards 80]

Writes data/datasets/fineweb10B_sp1024/fineweb_{val,train}_NNNNNN.bin and
data/tokenizers/fineweb_1024_bpe.model (train_gpt.py's default DATA_PATH and TOKENIZER_PATH).
Shards already on disk that pass the header and size check are kept; a download that fails the check
is fetched once more, then reported. Run it again after an interruption: it continues.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
from train_gpt import check_token_range, read_shard  # noqa: E402

REPO_ID, REMOTE = "willdepueoai/parameter-golf", "datasets"
DATASET, TOKENIZER = "fineweb10B_sp1024", "fineweb_1024_bpe"
VOCAB_SIZE = 1024


def hf_hub_download(**kw) -> str:
    from huggingface_hub import hf_hub_download as download  # imported late: tests replace this function
    return download(**kw)


def fetch(remote: str, dest: Path, force: bool = False) -> Path:
    """remote (a path under the repo) -> dest, through the Hugging Face cache; atomic on dest."""
    folder, name = remote.rsplit("/", 1)
    cached = Path(hf_hub_download(repo_id=REPO_ID, repo_type="dataset", subfolder=folder, filename=name,
                                  force_download=force)).resolve(strict=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    shutil.copyfile(cached, part)
    os.replace(part, dest)
    return dest


def shard_ok(path: Path) -> str | None:
    """None if the shard is complete and well-formed, else what is wrong with it."""
    try:
        check_token_range(read_shard(path), VOCAB_SIZE, str(path))
    except (OSError, ValueError) as e:
        return str(e)
    return None


def fetch_shard(remote: str, dest: Path) -> str:
    if dest.is_file() and shard_ok(dest) is None:
        return "kept"
    for force in (False, True):  # a bad file in the cache is downloaded afresh once
        problem = shard_ok(fetch(remote, dest, force))
        if problem is None:
            return "downloaded"
    dest.unlink()
    raise RuntimeError(f"{remote} is still invalid after a fresh download ({problem}); check the dataset "
                       f"{REPO_ID} or your connection and run this script again")


def shard_counts(manifest: dict) -> tuple[int, int]:
    entry = next((d for d in manifest.get("datasets", []) if d.get("name") == DATASET), None)
    stats = (entry or {}).get("stats") or {}
    if "files_val" not in stats or "files_train" not in stats:
        raise RuntimeError(f"{REMOTE}/manifest.json has no file counts for {DATASET}: the export changed; "
                           f"update this script")
    return int(stats["files_val"]), int(stats["files_train"])


def main(argv=None) -> int:
    cli = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cli.add_argument("--train-shards", type=int, default=80, help="training shards of 100M tokens (default 80)")
    cli.add_argument("--out", type=Path, default=ROOT, help="folder that gets datasets/ and tokenizers/")
    opt = cli.parse_args(argv)
    manifest = json.loads(fetch(f"{REMOTE}/manifest.json", opt.out / "datasets" / "manifest.json").read_text())
    n_val, n_train = shard_counts(manifest)
    if not 0 <= opt.train_shards <= n_train:
        raise SystemExit(f"--train-shards must be between 0 and {n_train} (the export has {n_train})")
    fetch(f"{REMOTE}/tokenizers/{TOKENIZER}.model", opt.out / "tokenizers" / f"{TOKENIZER}.model")
    names = [f"fineweb_val_{i:06d}.bin" for i in range(n_val)] + [f"fineweb_train_{i:06d}.bin"
                                                                  for i in range(opt.train_shards)]
    done = {"kept": 0, "downloaded": 0}
    for name in tqdm(names, desc="shards", unit="shard"):
        done[fetch_shard(f"{REMOTE}/datasets/{DATASET}/{name}", opt.out / "datasets" / DATASET / name)] += 1
    print(f"{len(names)} shards in {opt.out / 'datasets' / DATASET}: {done['downloaded']} downloaded, "
          f"{done['kept']} already complete; tokenizer in {opt.out / 'tokenizers'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
