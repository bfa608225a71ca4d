#!/usr/bin/env bash
# Inductor's own report of each generated kernel's time, bytes and GB/s (TORCHINDUCTOR_PROFILE, one table per
# compiled-graph call, kernels benchmarked once in isolation), its generated code, and bench_step's profile of the
# same version, for reading the "inductor fused" family kernel by kernel.
#   OUT=dir bash scripts/profile_inductor.sh [path/to/train_gpt.py]
set -euo pipefail
out=$(realpath "${OUT:?set OUT to the folder for the logs}")
code=$(realpath "${1:-$(dirname "$0")/../train_gpt.py}")
cd "$(dirname "$0")"
# without the benchmark harness: torch 2.11 calls the harness's benchmark_compiled_module() without its args
# when a profile output file is set (InductorError: TypeError ... missing 1 required positional argument)
TORCHINDUCTOR_PROFILE=1 TORCHINDUCTOR_PROFILE_OUTPUT="$out/inductor_bandwidth.txt" TORCH_LOGS=output_code python3 -c "
import runpy, sys, torch._inductor.config as inductor
inductor.benchmark_harness = False
sys.argv = ['bench_step.py', '--variants', 'train', '--breakdown', 'train', '--steps', '3', '--profile', '3',
            '--top', '80', '--code', '$code']
runpy.run_path('bench_step.py', run_name='__main__')" >"$out/profile_inductor.log" 2>"$out/output_code.log"
gzip -f "$out/output_code.log" "$out/inductor_bandwidth.txt"
tail -n 95 "$out/profile_inductor.log"
