#!/usr/bin/env bash
# For each family's tiny model (tests/fixtures/families/<family>/model): trains a job with
# `dn train sft --local` on the example data, then loads its final adapter with PEFT on the model as
# transformers 5 builds it (scripts/reference/peft_eval_families.py): PEFT's eval loss must equal the job's
# eval/loss within 1e-3 relative. Prints the comparison and writes it to
# scripts/reference/peft_eval_families.out. Optional arguments: family names, or gemma3/multimodal for Gemma
# 3's multimodal checkpoint around the same text model (default: all of them).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
python=$(scripts/reference/venv-families.sh)
cargo build -q -p dn-cli
dn=$root/target/debug/dn
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
families=("$@")
[ ${#families[@]} -gt 0 ] || families=(llama mistral qwen2 qwen3 gemma2 gemma3 gemma3/multimodal phi3)
"$python" - examples/capabilities/support-agent/agents/support.md >"$work/prompt.txt" <<'PY'
import sys
text = open(sys.argv[1]).read()
if text.startswith("---"):
    text = text.split("\n---", 2)[1].split("\n", 1)[1] if "\n---" in text[3:] else text
print(text.strip(), end="")
PY
status=0
: >"$work/out"
for family in "${families[@]}"; do
  case $family in
    */*) model=tests/fixtures/families/$family ;;
    *) model=tests/fixtures/families/$family/model ;;
  esac
  family=${family//\//-}
  "$dn" --json train sft --local --data-dir "$work/data-$family" --model "$model" \
    --capability examples/capabilities/support-agent --dataset examples/datasets/support-demos \
    --eval-dataset examples/datasets/support-eval --steps 4 --batch-size 4 --learning-rate 1e-2 \
    --lora-rank 8 --max-sequence-length 512 --poll-interval-sec 1 >"$work/job-$family.json"
  "$dn" --json data preview --model "$model" --file examples/datasets/support-eval/eval.jsonl \
    --system-prompt-file "$work/prompt.txt" --max-sequence-length 512 --limit 1000 >"$work/eval-$family.jsonl"
  "$python" scripts/reference/peft_eval_families.py "$family" "$model" "$work/job-$family.json" \
    "$work/eval-$family.jsonl" "$work/data-$family/storage" 2>/dev/null | tee -a "$work/out" || status=1
done
cp "$work/out" scripts/reference/peft_eval_families.out
exit $status
