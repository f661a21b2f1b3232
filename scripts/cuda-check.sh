#!/usr/bin/env bash
# The CUDA build on a machine with no GPU and no CUDA install (CI): builds `dn --features cuda` (nvcc from
# PyPI's CUDA 13.0 wheels, CUDA loaded at run time: scripts/lib/cuda.sh), unoptimised for speed of the
# build, then proves that this one binary starts without libcuda, refuses `--device cuda` saying why, and
# trains a tiny model on the CPU with `--device auto` (scripts/cuda-smoke.sh). Own target directory, so
# the CPU build cache stays warm.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/lib/cuda.sh
source "$root/scripts/lib/cuda.sh"
cuda_toolchain "$root"
cuda_runtime_loading "$root"
cd "$root"
cargo build -p dn-cli --features cuda --profile cuda-smoke --target-dir "$root/target/cuda" \
  "${CUDA_CARGO_ARGS[@]}"
bash scripts/cuda-smoke.sh "$root/target/cuda/cuda-smoke/dn"
