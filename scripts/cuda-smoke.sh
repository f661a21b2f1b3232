#!/usr/bin/env bash
# A `--features cuda` dn binary ($1) on a machine without a GPU: `--device cuda` exits at once saying why,
# and a local job with the default device (auto) trains a tiny model on the CPU and completes.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dn=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export HOME=$work
if [ -e /dev/nvidia0 ]; then
  echo "a GPU is present: this smoke test is for machines without one" >&2
  exit 1
fi
if out=$(timeout 60 "$dn" worker --device cuda --data-dir "$work/data" 2>&1); then
  echo "dn worker --device cuda started without a GPU: $out" >&2
  exit 1
fi
grep -q "no usable CUDA GPU" <<<"$out" || { echo "unexpected refusal: $out" >&2; exit 1; }
echo "--device cuda refused: $(grep -o 'no usable CUDA GPU.*' <<<"$out" | head -n 1)"
out=$(timeout 300 "$dn" train sft --local --data-dir "$work/data" \
  --model "$root/tests/fixtures/families/llama/model" \
  --capability "$root/examples/capabilities/support-agent" \
  --dataset "$root/examples/datasets/support-demos" \
  --steps 2 --batch-size 2 --max-sequence-length 128 --lora-rank 4 --eval-samples 0 \
  --poll-interval-sec 0.2 --timeout-sec 240 2>&1) || { echo "$out" >&2; exit 1; }
grep -q "training started on cpu" <<<"$out" || { echo "not trained on the CPU: $out" >&2; exit 1; }
grep -q "completed tinker/sft" <<<"$out" || { echo "job did not complete: $out" >&2; exit 1; }
echo "the CUDA build trained on the CPU with --device auto: $(grep 'step 2/2' <<<"$out" | head -n 1)"
