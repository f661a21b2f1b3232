#!/usr/bin/env bash
# dn's GGUF export of SmolLM2 + the fixture adapter, read by the `gguf` package and run by llama.cpp
# (llama-cpp-python, built from source into $DN_CACHE_DIR/venv-llamacpp: minutes on 2 cores the first
# time). Needs target/debug/dn. Writes tests/fixtures/generate/gguf_check.json.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cache=${DN_CACHE_DIR:-$root/.cache}
venv=$cache/venv-llamacpp
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import llama_cpp, gguf' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q llama-cpp-python==0.3.36 gguf==0.19.0 numpy safetensors
fi
gguf=$("$root/scripts/fetch-test-model.sh")
adapter="$root/tests/fixtures/generate/smollm2-adapter"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dn="$root/target/debug/dn"
"$dn" model merge --base "$gguf" --adapter "$adapter" --out "$work/merged" --dtype f32
"$dn" model merge --base "$gguf" --adapter "$adapter" --out "$work/f32.gguf" --format gguf --dtype f32
"$dn" model merge --base "$gguf" --adapter "$adapter" --out "$work/q8_0.gguf" --format gguf --quant q8_0
"$venv/bin/python" "$root/scripts/reference/gguf_check.py" "$work/f32.gguf" "$work/q8_0.gguf" \
  "$work/merged" "$root/tests/fixtures/generate/smollm2.json" "$root/tests/fixtures/generate/gguf_check.json"
