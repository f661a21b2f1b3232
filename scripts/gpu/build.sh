#!/usr/bin/env bash
# Builds, on this machine (no GPU, no CUDA install), what scripts/gpu/check.sh runs on a GPU machine: the
# `--features cuda` release binaries `dn` and `gpu_check` (crates/dn-train/examples/gpu_check.rs) for
# sm_90 (H100/H200), CUDA loaded at run time (scripts/lib/cuda.sh), stripped and xz-compressed into
# target/gpu/payload. The device call carries the working tree (tracked files and untracked ones git does
# not ignore) and the payload in 64 MiB together: this prints both sizes and refuses a payload over
# 56 MiB or a sum over 64 MiB.
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
# The commit measured, marked when the working tree had changes not in it.
{ git -C "$root" rev-parse HEAD | tr -d '\n'
  [ -z "$(git -C "$root" status --porcelain --untracked-files=no)" ] || printf ' (with uncommitted changes)'
  echo; } > "$payload/commit"
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
payload_bytes=$(du -sb "$payload" | cut -f1)
# du skips (and complains about) tracked files deleted in the tree; its total stands.
tree_bytes=$(cd "$root" && { git ls-files -z --cached --others --exclude-standard \
  | du -cb --files0-from=- 2>/dev/null || true; } | tail -n 1 | cut -f1)
ls -l "$payload"
echo "payload: $(mib "$payload_bytes") in $payload"
echo "working tree carried with it: $(mib "$tree_bytes"); together $(mib $((payload_bytes + tree_bytes))) of 64 MiB"
if [ "$payload_bytes" -gt $((56 * 1024 * 1024)) ]; then
  echo "the payload is over 56 MiB: the device call carries 64 MiB with the working tree" >&2
  exit 1
fi
if [ $((payload_bytes + tree_bytes)) -gt $((64 * 1024 * 1024)) ]; then
  echo "the payload and the working tree are over 64 MiB together: the device call would refuse them" >&2
  exit 1
fi
