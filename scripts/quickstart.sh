#!/usr/bin/env bash
# The main job: an end-to-end fine-tune on the embedded default (SQLite + local storage + in-process
# worker). Builds dn, fetches the test model (SmolLM2-135M-Instruct), starts `dn serve` on loopback, pushes
# the example capability and datasets, and submits the docs' example job with --wait. Exits with the
# job's outcome (0 only if it completed).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build -q -p dn-cli
dn=$root/target/debug/dn
model=$(scripts/fetch-test-model.sh)
work=${DN_QUICKSTART_DIR:-$(mktemp -d)}
mkdir -p "$work"
server_pid=
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null; true; }
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$dn" serve --listen "127.0.0.1:$port" --data-dir "$work/data" >"$work/serve.out" 2>"$work/serve.log" &
server_pid=$!
for _ in $(seq 1 100); do grep -q '^dn_' "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
key=$(grep '^dn_' "$work/serve.out" | head -n1)
[ -n "$key" ] || { cat "$work/serve.log" >&2; exit 1; }
export DN_SERVER="http://127.0.0.1:$port" DN_API_KEY="$key"
echo "dn serve on $DN_SERVER (data in $work/data, log $work/serve.log)"

"$dn" capability push examples/capabilities/support-agent
"$dn" dataset push examples/datasets/support-demos
"$dn" dataset push examples/datasets/support-eval
job=$("$dn" train sft --model "$model" --capability support-agent@1.0.0 --dataset support-demos@0.1.0 \
  --eval-dataset support-eval@0.1.0 --steps 100 --batch-size 8 --learning-rate 1e-4 --lora-rank 16)
echo "$job"
id=${job%% *}
status=0
"$dn" train wait "$id" --poll-interval-sec 1 || status=$?
"$dn" train logs "$id"
exit "$status"
