#!/usr/bin/env bash
# The web console in a real browser: headless Chromium (Debian's chromium and chromium-driver, installed
# here if missing) driven by Selenium (console_check.py, in .cache/venv-browser) against a real `dn serve`
# on loopback with one worker training the test model. Screenshots go to target/console-screenshots/.
# Usage: scripts/browser/console_check.sh [path/to/dn]   (DN_TEST_MODEL_GGUF: the SmolLM2 GGUF)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dn=${1:-$root/target/debug/dn}
model=${DN_TEST_MODEL_GGUF:-$("$root/scripts/fetch-test-model.sh")}
cache=${DN_CACHE_DIR:-$root/.cache}
# shellcheck source=scripts/lib/venv.sh
source "$root/scripts/lib/venv.sh"
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  echo "installing chromium and chromium-driver (Debian packages)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 && apt-get install -y -qq chromium chromium-driver >&2
fi
ensure_venv "$cache/venv-browser" "$root/scripts/browser/requirements.txt"

# shellcheck source=scripts/lib/dn_serve.sh
source "$root/scripts/lib/dn_serve.sh"
dn_serve_workdir

export HOME=$work
dn_serve_start "$dn" "$work" --workers 1 --model "$model"
port=$DN_SERVE_PORT key=$DN_SERVE_KEY
export DN_SERVER="http://127.0.0.1:$port" DN_API_KEY="$key" DN_WORKSPACE=main
probe='<img src=x onerror="window.__pwned=1"><script>window.__pwned=1</script>'
"$dn" capability push "$root/examples/capabilities/support-agent" >/dev/null
"$dn" dataset push "$root/examples/datasets/support-demos" >/dev/null
"$dn" dataset push "$root/examples/datasets/support-eval" >/dev/null
mkdir -p "$work/probe"
printf 'name: probe\nversion: 0.1.0\nformat: jsonl\ndescription: %s\n' "'$probe'" >"$work/probe/dataset.yaml"
python3 - "$work/probe/rows.jsonl" "$probe" <<'PY'
import json, sys
row = {"messages": [{"role": "user", "content": sys.argv[2]}, {"role": "assistant", "content": sys.argv[2]}]}
bad = {"colour": "no messages here"}
open(sys.argv[1], "w").write(json.dumps(row) + "\n" + json.dumps(bad) + "\n")
PY
"$dn" dataset push "$work/probe" >/dev/null
base=(--model "$model" --capability support-agent@1.0.0 --dataset support-demos@0.1.0
  --batch-size 2 --max-sequence-length 128 --eval-samples 0)
common=("${base[@]}" --lora-rank 4)
# The job to watch: slow enough on the CPU (about 2 s a step) to see steps arrive.
watched=$("$dn" train sft "${common[@]}" --name "support-agent r4" --steps 8 \
  --eval-dataset support-eval@0.1.0 --eval-interval 3 --json \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
# The job to cancel, named with markup that would run script if the page parsed it; it waits in the
# queue behind the first (one worker).
queued=$("$dn" train sft "${common[@]}" --name "$probe" --steps 500 --json \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
# A job to compare with the watched one (another rank and rate), run once the probe job is cancelled.
compared=$("$dn" train sft "${base[@]}" --lora-rank 8 --learning-rate 3e-4 --name "support-agent r8" \
  --steps 4 --eval-dataset support-eval@0.1.0 --eval-interval 4 --json \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')

mkdir -p "$root/target/console-screenshots"
"$cache/venv-browser/bin/python" "$root/scripts/browser/console_check.py" \
  --url "http://127.0.0.1:$port" --key "$key" --watched "$watched" --queued "$queued" --compared "$compared" \
  --probe "$probe" --screenshots "$root/target/console-screenshots"
