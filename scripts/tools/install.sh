#!/usr/bin/env bash
# Installs the pinned requirements: the CUDA stack where an NVIDIA GPU is visible, otherwise the
# CPU build of torch, no fla-core, flash-qla or tilelang (the CPU path runs its reference), and
# triton, whose interpreter lets the tests check our Triton kernels on the CPU.
set -euo pipefail
cd "$(dirname "$0")/../.."
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  python3 -m pip install -r requirements.txt pytest==9.0.3
else
  python3 -m pip install "torch==2.13.0+cpu" $(grep -vE '^(#|torch|fla-core|flash-qla|tilelang)' requirements.txt) pytest==9.0.3
fi
