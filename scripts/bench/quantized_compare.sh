#!/usr/bin/env bash
# Quantized bases on this CPU, alternating runs, LoRA r16 on every projection of SmolLM2-135M, on random ids
# (every token supervised: the peer's best case) and on chat data (compare.sh's support corpus): dn on the Q4_1 GGUF kept quantized (as_stored) and decoded (none); dn on the
# model imported as an f32 directory, quantized to NF4 at load (nf4) and dense (none); and transformers 5 +
# bitsandbytes + PEFT on the same NF4 base (QLoRA). Env: BATCH (4), LEN (256), STEPS (3 per run), ROUNDS
# (2), LR (1e-4). Creates what it needs (the families virtualenv, the imported model under .cache/bench).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
batch=${BATCH:-4}; len=${LEN:-256}; steps=${STEPS:-3}; rounds=${ROUNDS:-2}; lr=${LR:-1e-4}
python=$(scripts/reference/run.sh python families)
gguf=$(scripts/fetch-test-model.sh)
work=${DN_BENCH_DIR:-$root/.cache/bench}
mkdir -p "$work"
cargo build -q --release -p dn-cli
imported=$work/smollm2-f32
[ -f "$imported/config.json" ] || target/release/dn model import "$gguf" --out "$imported" >/dev/null
cargo bench -q -p dn-train --bench train_step --no-run
bench=$(ls -t target/release/deps/train_step-* | grep -v '\.d$' | head -n1)
"$python" scripts/bench/random_examples.py "$((batch * steps))" "$len" "$work/quant-random.jsonl"
# The chat workload of compare.sh (a generated support corpus rendered and masked by dn), batch 8.
n=$((8 * steps))
"$python" scripts/bench/corpus.py "$n" "$work/quant-corpus.jsonl"
printf '%s' "You are the support agent of Acme Cloud. Answer the customer's question in at most three sentences." >"$work/prompt.txt"
target/release/dn --json data preview --model "$gguf" --file "$work/quant-corpus.jsonl" \
  --system-prompt-file "$work/prompt.txt" --limit "$n" --max-sequence-length 2048 >"$work/quant-chat.jsonl"
for workload in random chat; do
  b=$batch; [ "$workload" = chat ] && b=8
  declare -A files=()
  for round in $(seq 1 "$rounds"); do
    for run in "gguf as_stored" "gguf none" "dir nf4" "dir none"; do
      set -- $run
      model=$gguf; [ "$1" = dir ] && model=$imported
      out=$work/dn-$workload-$1-$2-$round.json
      "$bench" --model "$model" --base-quantization "$2" --examples "$work/quant-$workload.jsonl" --batch "$b" \
        --lr "$lr" --out "$out" >/dev/null
      files[$1-$2]+="$out "
    done
    out=$work/peer-qlora-$workload-$round.json
    "$python" scripts/bench/qlora_peer.py "$imported" "$work/quant-$workload.jsonl" "$b" "$lr" "$out" >/dev/null 2>&1
    files[peer]+="$out "
  done
  title="SmolLM2-135M, $workload, batch $b, $steps steps x $rounds rounds, LoRA r16 all projections, lr $lr"
  # shellcheck disable=SC2086
  "$python" scripts/bench/table.py "$title: Q4_1 GGUF kept (left) vs decoded (right)" ${files[gguf-as_stored]} -- ${files[gguf-none]}
  # shellcheck disable=SC2086
  "$python" scripts/bench/table.py "$title: nf4 at load (left) vs f32 (right)" ${files[dir-nf4]} -- ${files[dir-none]}
  # shellcheck disable=SC2086
  "$python" scripts/bench/table.py "$title: dn nf4 at load (left) vs transformers + bitsandbytes + PEFT nf4 (right)" ${files[dir-nf4]} -- ${files[peer]}
done
