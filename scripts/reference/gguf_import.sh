#!/usr/bin/env bash
# Regenerates crates/dn-render/tests/fixtures/smollm2_import_reference.json (gguf-py + transformers).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
python=$("$root/scripts/reference/venv.sh")
gguf=$("$root/scripts/fetch-test-model.sh")
"$python" "$root/scripts/reference/gguf_import.py" "$gguf" "$root/crates/dn-render/tests/fixtures/smollm2_import_reference.json"
