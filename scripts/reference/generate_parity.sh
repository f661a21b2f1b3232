#!/usr/bin/env bash
# Regenerates the greedy generation references (scripts/reference/generate_parity.py): each family's
# generate.json and tests/fixtures/generate/ (SmolLM2 with a PEFT adapter).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
python=$("$root/scripts/reference/venv-families.sh")
gguf=$("$root/scripts/fetch-test-model.sh")
mkdir -p "$root/tests/fixtures/generate"
"$python" "$root/scripts/reference/generate_parity.py" "$gguf"
# PEFT's model card is not part of the adapter.
rm -f "$root/tests/fixtures/generate/smollm2-adapter/README.md"
chmod 644 "$root/tests/fixtures/generate/smollm2-adapter/"*
