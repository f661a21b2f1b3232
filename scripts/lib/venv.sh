# shellcheck shell=bash
# Source this file, then `ensure_venv DIR REQUIREMENTS` creates (or recreates, when REQUIREMENTS changed) a
# virtualenv in DIR with those packages, quietly (pip's output to stderr).
ensure_venv() {
  local venv=$1 req=$2
  local stamp=$venv/.requirements
  if [ ! -x "$venv/bin/python" ] || ! cmp -s "$req" "$stamp"; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q -r "$req" >&2
    cp "$req" "$stamp"
  fi
}
