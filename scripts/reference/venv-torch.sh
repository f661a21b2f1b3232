#!/usr/bin/env bash
# Creates (once) the PyTorch reference virtualenv in $DN_CACHE_DIR/venv-torch and prints its python.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cache=${DN_CACHE_DIR:-$root/.cache}
venv=$cache/venv-torch
req=$root/scripts/reference/requirements-torch.txt
stamp=$venv/.requirements
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$req" "$stamp"; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r "$req" >&2
  cp "$req" "$stamp"
fi
echo "$venv/bin/python"
