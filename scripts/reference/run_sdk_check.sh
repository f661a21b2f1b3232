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

work=$(mktemp -d)
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
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

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$dn" serve --listen "127.0.0.1:$port" --data-dir "$work/data" --workers 0 --model "$work/model" \
  >"$work/serve.out" 2>"$work/serve.err" &
server_pid=$!
for _ in $(seq 1 100); do
  grep -q '^dn_' "$work/serve.out" 2>/dev/null && break
  sleep 0.1
done
key=$(grep '^dn_' "$work/serve.out" | head -n1)
[ -n "$key" ] || { cat "$work/serve.err" >&2; echo "dn serve printed no key" >&2; exit 1; }
other=$("$dn" keys create --org rival --data-dir "$work/data")

export DN_SERVER="http://127.0.0.1:$port" DN_API_KEY="$key" DN_WORKSPACE=main
"$dn" capability push "$work/cap" >/dev/null
"$dn" dataset push "$work/demos.jsonl" --name support-demos --version 0.1.0 >/dev/null
"$dn" dataset push "$work/eval" >/dev/null
"$venv/bin/python" "$root/scripts/reference/sdk_roundtrip.py" "http://127.0.0.1:$port" "$key" "$other" "$work/model"
