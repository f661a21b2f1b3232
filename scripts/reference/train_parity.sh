#!/usr/bin/env bash
# Regenerates crates/dn-train/tests/fixtures/smollm2_train_parity.json (transformers + PEFT on CPU).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
python=$("$root/scripts/reference/venv-torch.sh")
gguf=$("$root/scripts/fetch-test-model.sh")
mkdir -p "$root/crates/dn-train/tests/fixtures"
"$python" "$root/scripts/reference/train_parity.py" "$gguf" "$root/crates/dn-train/tests/fixtures/smollm2_train_parity.json"
