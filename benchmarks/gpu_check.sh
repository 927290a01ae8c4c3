#!/usr/bin/env bash
# Batched refits on a GPU: the runs behind "batch_devices.py: Measured" in benchmarks/README.md.
#
# Run from the repository root where JAX sees a GPU (PYTHON: an interpreter with the package's
# dependencies and a CUDA build of jaxlib; OUT: where the CSV tables go). The XLA flags are
# the ones that made the first compilation take seconds instead of minutes there; without
# them one program's compilation ran past 4 minutes on an H100. They are set here only, not
# by the package: on the CPU, where compiling takes seconds anyway, turning off LLVM's
# expensive passes could make the compiled code slower (not measured).
set -euo pipefail
export XLA_FLAGS="${XLA_FLAGS:-} --xla_llvm_disable_expensive_passes=true --xla_gpu_autotune_level=0"
PY=${PYTHON:-python3}
OUT=${OUT:-results/benchmarks}
mkdir -p "$OUT"
# Small batches, the retry programs compiled in the untimed warm-up.
"$PY" benchmarks/batch_devices.py --ns 8 --batch-sizes 8 64 --datasets 512 --max-batches 4 \
    --csv "$OUT/gpu_small_batches.csv"
# One batch of 512 trials per design; the retry programs compile in the timed part where the
# persistent cache does not have them yet (about 10 s).
for n in 8 32; do
    "$PY" benchmarks/batch_devices.py --ns "$n" --batch-sizes 512 --datasets 512 \
        --no-compile-retries --csv "$OUT/gpu_batch512_n$n.csv"
done
