#!/usr/bin/env bash
# Regenerates tests/fixtures/families/: each family's tiny random model saved by transformers 5 and PEFT's
# training reference (family_models.py), the older config layout of the same models as transformers 4.57
# wrote it (family_legacy.py), token/mask parity cases of each family's chat template (family_chat.py), and
# GGUF files of the qwen2 and qwen3 models with transformers' tokenization from them (family_gguf.py).
# Optional arguments: family names (default: all).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
python=$("$root/scripts/reference/venv-families.sh")
legacy=$("$root/scripts/reference/venv.sh")
"$python" "$root/scripts/reference/family_models.py" "$@"
"$legacy" "$root/scripts/reference/family_legacy.py" "$@"
"$python" "$root/scripts/reference/family_chat.py" "$@"
"$python" "$root/scripts/reference/family_gguf.py" "$@"
