#!/usr/bin/env bash
# dn vs transformers 5 + PEFT (target_parameters) on a Qwen3-MoE-shaped random model of 364M parameters
# (moe_model.py: 32 experts, top 4), LoRA r16 on attention and every expert, the peer's best case (random
# ids, every token supervised), alternating runs. Env: BATCH (4), LEN (256), STEPS (3 per run), ROUNDS (2),
# LR (1e-4). Creates what it needs (the families virtualenv, the model under .cache/bench).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
batch=${BATCH:-4}; len=${LEN:-256}; steps=${STEPS:-3}; rounds=${ROUNDS:-2}; lr=${LR:-1e-4}
python=$(scripts/reference/run.sh python families)
work=${DN_BENCH_DIR:-$root/.cache/bench}
mkdir -p "$work"
model=$work/qwen3-moe-364m
[ -f "$model/config.json" ] || "$python" scripts/bench/moe_model.py "$model"
cargo bench -q -p dn-train --bench train_step --no-run
bench=$(ls -t target/release/deps/train_step-* | grep -v '\.d$' | head -n1)
"$python" scripts/bench/random_examples.py "$((batch * steps))" "$len" "$work/moe-random.jsonl" 32000
dn_files=(); peer_files=()
for round in $(seq 1 "$rounds"); do
  "$bench" --model "$model" --examples "$work/moe-random.jsonl" --batch "$batch" --lr "$lr" \
    --out "$work/dn-moe-$round.json" >/dev/null
  dn_files+=("$work/dn-moe-$round.json")
  "$python" scripts/bench/moe_peer.py "$model" "$work/moe-random.jsonl" "$batch" "$lr" \
    "$work/peer-moe-$round.json" >/dev/null 2>&1
  peer_files+=("$work/peer-moe-$round.json")
done
"$python" scripts/bench/table.py "Qwen3-MoE-shaped 364M (32 experts, top 4): batch $batch x $len random ids, $steps steps x $rounds rounds, LoRA r16 attention + experts, lr $lr" \
  "${dn_files[@]}" -- "${peer_files[@]}"
