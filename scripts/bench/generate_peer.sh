#!/usr/bin/env bash
# transformers + PEFT generate on the shapes of `cargo bench -p dn-train --bench generate` (same machine).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
python=$("$root/scripts/reference/run.sh" python families)
gguf=$("$root/scripts/fetch-test-model.sh")
"$python" "$root/scripts/bench/generate_peer.py" "$gguf" "${1:-256}"
