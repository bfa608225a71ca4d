#!/usr/bin/env bash
# Installs the pinned requirements: where an NVIDIA GPU is visible, exactly the CUDA stack the GPU numbers
# were measured with (requirements.txt); otherwise the CPU build of torch 2.13.0 with triton 3.7.1, whose
# interpreter lets the tests check our Triton kernels on the CPU, and none of the GPU-only packages (fla-core,
# flash-linear-attention, flash-qla, tilelang and the packages it needs: the CPU path runs its reference code).
set -euo pipefail
cd "$(dirname "$0")/../.."
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  python3 -m pip install -r requirements.txt pytest==9.0.3
else
  python3 -m pip install "torch==2.13.0+cpu" "triton==3.7.1" \
    $(grep -vE '^(#|--|torch|triton|fla-core|flash-|tilelang|apache-tvm-ffi|z3-solver)' requirements.txt) pytest==9.0.3
fi
