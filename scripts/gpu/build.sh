#!/usr/bin/env bash
# Builds, on this machine (no GPU, no CUDA install), what scripts/gpu/check.sh runs on a GPU machine: the
# `--features cuda` release binaries `dn` and `gpu_check` (crates/dn-train/examples/gpu_check.rs) for
# sm_90 (H100/H200), CUDA loaded at run time (scripts/lib/cuda.sh), stripped and xz-compressed into
# target/gpu/payload (carried with the working tree: under 60 MiB).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=scripts/lib/cuda.sh
source "$root/scripts/lib/cuda.sh"
cuda_toolchain "$root"
cuda_runtime_loading "$root"
cd "$root"
target=$root/target/cuda
# One invocation: both binaries share one resolution of features, so the dependencies (candle-kernels'
# nvcc run above all) are built once.
cargo build --release -p dn-cli -p dn-train --features dn-cli/cuda,dn-train/cuda --bin dn \
  --example gpu_check --target-dir "$target" "${CUDA_CARGO_ARGS[@]}"
payload=$root/target/gpu/payload
rm -rf "$payload" && mkdir -p "$payload"
for bin in "$target/release/dn" "$target/release/examples/gpu_check"; do
  name=$(basename "$bin")
  strip -o "$payload/$name" "$bin"
  xz -T0 -9 -f "$payload/$name"
done
git -C "$root" rev-parse HEAD > "$payload/commit"
size=$(du -sb "$payload" | cut -f1)
echo "payload: $(du -sh "$payload" | cut -f1) in $payload"
ls -l "$payload"
if [ "$size" -gt $((60 * 1024 * 1024)) ]; then
  echo "the payload is over 60 MiB: the device call carries at most 64 MiB" >&2
  exit 1
fi
