#!/usr/bin/env bash
# Creates (once) the reference virtualenv in $DN_CACHE_DIR/venv-ref and prints its python.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cache=${DN_CACHE_DIR:-$root/.cache}
venv=$cache/venv-ref
req=$root/scripts/reference/requirements.txt
# shellcheck source=scripts/lib/venv.sh
source "$root/scripts/lib/venv.sh"
ensure_venv "$venv" "$req"
echo "$venv/bin/python"
