#!/usr/bin/env bash
# dn vs PyTorch + PEFT + TRL (SFTTrainer) on the same model, data and hyperparameters, alternating runs.
# Two workloads: realistic chat (a generated corpus, see corpus.py for its turn-length distribution, rendered
# and masked by dn: assistant-only loss) and the peer's best case (random ids, all supervised, no padding).
# Env: BATCH (8), STEPS (4 per run), ROUNDS (2), LR (1e-4). Needs nothing installed by hand: the peer's
# virtualenv is created by `scripts/reference/run.sh python torch`.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
batch=${BATCH:-8}; steps=${STEPS:-4}; rounds=${ROUNDS:-2}; lr=${LR:-1e-4}
python=$(scripts/reference/run.sh python torch)
gguf=$(scripts/fetch-test-model.sh)
cargo build -q --release -p dn-cli
cargo bench -q -p dn-train --bench train_step --no-run
bench=$(ls -t target/release/deps/train_step-* | grep -v '\.d$' | head -n1)
work=${DN_BENCH_DIR:-$root/.cache/bench}
mkdir -p "$work"
n=$((batch * steps))
"$python" scripts/bench/corpus.py "$n" "$work/corpus.jsonl"
printf '%s' "You are the support agent of Acme Cloud. Answer the customer's question in at most three sentences." >"$work/prompt.txt"
target/release/dn --json data preview --model "$gguf" --file "$work/corpus.jsonl" \
  --system-prompt-file "$work/prompt.txt" --limit "$n" --max-sequence-length 2048 >"$work/chat.jsonl"
"$python" scripts/bench/random_examples.py "$((4 * steps))" 256 "$work/random.jsonl"
for workload in chat random; do
  b=$batch; [ "$workload" = random ] && b=4
  dn_files=(); peer_files=()
  for round in $(seq 1 "$rounds"); do
    "$bench" --examples "$work/$workload.jsonl" --batch "$b" --lr "$lr" --out "$work/dn-$workload-$round.json" >/dev/null
    dn_files+=("$work/dn-$workload-$round.json")
    "$python" scripts/bench/peer_sft.py "$gguf" "$work/$workload.jsonl" "$b" "$lr" "$work/peer-$workload-$round.json" >/dev/null 2>&1
    peer_files+=("$work/peer-$workload-$round.json")
  done
  "$python" scripts/bench/table.py "$workload: batch $b, $steps steps x $rounds rounds, LoRA r16 all projections, lr $lr" \
    "${dn_files[@]}" -- "${peer_files[@]}"
done
