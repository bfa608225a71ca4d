"""scripts/bench/bench_attention.py: the packed document starts it gives Flash Attention (on the CPU), and the
script end to end at a small shape (GPU only)."""

import subprocess
import sys

import pytest
import torch

import train_gpt
from conftest import ROOT
from scripts.bench.bench_attention import doc_starts


def test_doc_starts_open_a_sequence_at_each_row_and_bos_and_pad_with_empty_ones():
    bos = train_gpt.BOS_ID
    ids = torch.tensor([[bos, 5, 6, bos, 7], [3, bos, bos, 4, 4]])
    assert doc_starts(ids, bos, 8).tolist() == [0, 3, 5, 6, 7, 10, 10, 10, 10]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="times CUDA kernels: needs a GPU")
def test_bench_attention_checks_then_times_every_contender():
    run = subprocess.run([sys.executable, "scripts/bench/bench_attention.py", "--batch", "2", "--seq", "512",
                          "--rounds", "2", "--calls", "2", "--caps", "64", "--flex-options", '{"num_stages": 2}'],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("relative max |diff| to flex") == 3, run.stdout[-3000:]
    medians = [line for line in run.stdout.splitlines() if ": median " in line]
    assert len(medians) == 3 and "faster in 0/2" in medians[0], run.stdout[-3000:]
