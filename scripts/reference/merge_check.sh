#!/usr/bin/env bash
# `dn model merge` of the SmolLM2 fixture adapter, loaded in transformers and held to base + PEFT
# (scripts/reference/merge_check.py). Needs target/debug/dn (cargo build -p dn-cli).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
python=$("$root/scripts/reference/venv-families.sh")
gguf=$("$root/scripts/fetch-test-model.sh")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
adapter="$root/tests/fixtures/generate/smollm2-adapter"
"$root/target/debug/dn" model merge --base "$gguf" --adapter "$adapter" --out "$work/merged" --dtype f32
"$python" "$root/scripts/reference/merge_check.py" "$gguf" "$work/merged" "$adapter" \
  "$root/tests/fixtures/generate/merge_check.json"
