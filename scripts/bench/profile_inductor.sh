#!/usr/bin/env bash
# Inductor's own report of each generated kernel's time, bytes and GB/s in the training step (TORCHINDUCTOR_PROFILE:
# every kernel timed once in isolation), one table per compiled graph in inductor_kernels.txt, with the generated
# code beside it. A step takes ~1 min in this mode, so it times one; in-place timings: bench_step.py --profile.
#   OUT=dir bash scripts/bench/profile_inductor.sh [path/to/train_gpt.py]
set -euo pipefail
out=$(realpath "${OUT:?set OUT to the folder for the logs}")
code=$(realpath "${1:-$(dirname "$0")/../../train_gpt.py}")
cd "$(dirname "$0")"
# without the benchmark harness: torch 2.11 calls the harness's benchmark_compiled_module() without its args
# when a profile output file is set (InductorError: TypeError ... missing 1 required positional argument)
TORCHINDUCTOR_PROFILE=1 TORCHINDUCTOR_PROFILE_OUTPUT="$out/inductor_bandwidth.txt" TORCH_LOGS=output_code python3 -c "
import runpy, sys, torch._inductor.config as inductor
inductor.benchmark_harness = False
sys.argv = ['bench_step.py', '--variants', 'train', '--breakdown', '', '--steps', '1', '--code', '$code']
runpy.run_path('bench_step.py', run_name='__main__')" >"$out/profile_inductor.log" 2>"$out/output_code.log"
gzip -f "$out/output_code.log" "$out/inductor_bandwidth.txt"
python3 inductor_tables.py "$out/inductor_bandwidth.txt.gz" "$out/output_code.log.gz" >"$out/inductor_kernels.txt"
head -n 60 "$out/inductor_kernels.txt"
