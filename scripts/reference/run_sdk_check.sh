#!/usr/bin/env bash
# Runs the reference SDK (PyPI dreadnode==2.0.52, in its own virtualenv) against a real `dn serve` on
# loopback. Usage: scripts/reference/run_sdk_check.sh [path/to/dn]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dn=${1:-$root/target/debug/dn}
cache=${DN_CACHE_DIR:-$root/.cache}
mkdir -p "$cache"
venv=$cache/venv-sdk
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import dreadnode.app.api.client" 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  # A full install fails on dependency conflicts; the API client needs only these.
  { "$venv/bin/pip" install -q --no-deps dreadnode==2.0.52 \
      && "$venv/bin/pip" install -q httpx pydantic loguru "logfire<5" truststore; } >"$cache/pip-sdk.log" 2>&1 \
    || { cat "$cache/pip-sdk.log" >&2; exit 1; }
fi

# shellcheck source=scripts/lib/dn_serve.sh
source "$root/scripts/lib/dn_serve.sh"
work=$(mktemp -d)
cleanup() {
  dn_serve_stop
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/model" "$work/cap/agents" "$work/eval"
cat >"$work/model/config.json" <<'JSON'
{"model_type":"llama","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,
 "vocab_size":256,"max_position_embeddings":512}
JSON
printf 'schema: 1\nname: support-agent\nversion: 1.0.0\ndescription: Answers tickets\n' >"$work/cap/capability.yaml"
printf -- '---\nname: support\n---\nYou are a support agent.\n' >"$work/cap/agents/support.md"
echo '{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}' >"$work/demos.jsonl"
printf 'name: support-eval\nversion: 0.1.0\nformat: jsonl\n' >"$work/eval/dataset.yaml"
cp "$work/demos.jsonl" "$work/eval/eval.jsonl"

dn_serve_start "$dn" "$work" --workers 0 --model "$work/model"
port=$DN_SERVE_PORT key=$DN_SERVE_KEY
other=$("$dn" keys create --org rival --data-dir "$work/data")

export DN_SERVER="http://127.0.0.1:$port" DN_API_KEY="$key" DN_WORKSPACE=main
"$dn" capability push "$work/cap" >/dev/null
"$dn" dataset push "$work/demos.jsonl" --name support-demos --version 0.1.0 >/dev/null
"$dn" dataset push "$work/eval" >/dev/null
"$venv/bin/python" "$root/scripts/reference/sdk_roundtrip.py" "http://127.0.0.1:$port" "$key" "$other" "$work/model"
