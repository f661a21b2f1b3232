#!/usr/bin/env bash
# Trains a small job with `dn train sft --local` on the example data, then checks its final adapter with PEFT
# (scripts/reference/peft_eval.py): PEFT's eval loss must equal the job's eval/loss within 1e-3 relative.
# Prints the comparison and writes it to scripts/reference/peft_eval.out.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
python=$(scripts/reference/venv-torch.sh)
gguf=$(scripts/fetch-test-model.sh)
cargo build -q -p dn-cli
dn=$root/target/debug/dn
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$dn" --json train sft --local --data-dir "$work/data" --model "$gguf" \
  --capability examples/capabilities/support-agent --dataset examples/datasets/support-demos \
  --eval-dataset examples/datasets/support-eval --steps 4 --batch-size 4 --learning-rate 1e-3 \
  --lora-rank 8 --poll-interval-sec 1 >"$work/job.json"
# The capability's system prompt as dn applies it: the agent file's body, front matter removed, trimmed.
"$python" - examples/capabilities/support-agent/agents/support.md >"$work/prompt.txt" <<'PY'
import sys
text = open(sys.argv[1]).read()
if text.startswith("---"):
    text = text.split("\n---", 2)[1].split("\n", 1)[1] if "\n---" in text[3:] else text
print(text.strip(), end="")
PY
"$dn" --json data preview --model "$gguf" --file examples/datasets/support-eval/eval.jsonl \
  --system-prompt-file "$work/prompt.txt" --limit 1000 >"$work/eval.jsonl"
"$python" scripts/reference/peft_eval.py "$gguf" "$work/job.json" "$work/eval.jsonl" "$work/data/storage" 2>/dev/null |
  tee scripts/reference/peft_eval.out
