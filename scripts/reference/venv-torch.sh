#!/usr/bin/env bash
# Creates (once) the PyTorch reference virtualenv in $DN_CACHE_DIR/venv-torch and prints its python.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cache=${DN_CACHE_DIR:-$root/.cache}
venv=$cache/venv-torch
req=$root/scripts/reference/requirements-torch.txt
# shellcheck source=scripts/lib/venv.sh
source "$root/scripts/lib/venv.sh"
ensure_venv "$venv" "$req"
echo "$venv/bin/python"
