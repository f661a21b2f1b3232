#!/usr/bin/env bash
# `cargo check --features cuda` for the dn binary (candle's CUDA backend, the trainer's CUDA paths) on a
# machine with no GPU and no CUDA install: nvcc comes from PyPI's CUDA 13 wheels in $DN_CACHE_DIR/venv-cuda,
# CUDA_COMPUTE_CAP defaults to 90 (H100). Own target directory, so the CPU build cache stays warm.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${DN_CACHE_DIR:-$root/.cache}
venv=$cache/venv-cuda
req=$root/scripts/requirements-cuda.txt
# shellcheck source=scripts/lib/venv.sh
source "$root/scripts/lib/venv.sh"
ensure_venv "$venv" "$req"
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
export CUDA_HOME=$site/nvidia/cu13
export PATH=$CUDA_HOME/bin:$PATH
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
nvcc --version | tail -n 2
cd "$root"
cargo check -p dn-cli --features cuda --target-dir "$root/target/cuda-check"
