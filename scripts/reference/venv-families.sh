#!/usr/bin/env bash
# Creates (once) the transformers 5 + PEFT reference virtualenv in $DN_CACHE_DIR/venv-families and prints
# its python.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cache=${DN_CACHE_DIR:-$root/.cache}
# shellcheck source=scripts/lib/venv.sh
source "$root/scripts/lib/venv.sh"
ensure_venv "$cache/venv-families" "$root/scripts/reference/requirements-families.txt"
echo "$cache/venv-families/bin/python"
