#!/usr/bin/env bash
# Peak memory (RSS of the whole process, /usr/bin/time) of one local job per base form: the README job on
# support-demos (STEPS steps x batch 8, LoRA r16) on SmolLM2-135M as the Q4_1 GGUF kept as stored and
# decoded, as an f32 model directory quantized to NF4 at load (nf4), to Q8_0 (q8_0) and dense (none), and
# as a bf16 directory (the hub's dtype; its embedding kept bf16 under nf4) dense and quantized to NF4.
# Prints one line per run: base, quantization, peak RSS MB, the ratio to the f32 job, last logged loss.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
steps=${STEPS:-6}
gguf=$(scripts/fetch-test-model.sh)
work=${DN_BENCH_DIR:-$root/.cache/bench}
mkdir -p "$work"
cargo build -q --release -p dn-cli
dn=$root/target/release/dn
imported=$work/smollm2-f32
[ -f "$imported/config.json" ] || "$dn" model import "$gguf" --out "$imported" >/dev/null
bf16=$work/smollm2-bf16
if [ ! -f "$bf16/config.json" ]; then
  python=$(scripts/reference/run.sh python families)
  "$python" - "$imported" "$bf16" <<'PY'
import json, shutil, sys
from pathlib import Path
import torch
from safetensors.torch import load_file, save_file
src, out = Path(sys.argv[1]), Path(sys.argv[2])
shutil.copytree(src, out)
for f in out.glob("*.safetensors"):
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in load_file(f).items()}, f, metadata={"format": "pt"})
config = json.loads((out / "config.json").read_text())
config["torch_dtype"] = config["dtype"] = "bfloat16"
(out / "config.json").write_text(json.dumps(config, indent=2))
PY
fi
run() { # gguf|dir quantization
  local data model=$gguf; data=$(mktemp -d)
  [ "$1" = dir ] && model=$imported
  [ "$1" = bf16 ] && model=$bf16
  /usr/bin/time -f '%M' -o "$data/rss" "$dn" train sft --local --data-dir "$data" --model "$model" \
    --base-quantization "$2" --capability examples/capabilities/support-agent \
    --dataset examples/datasets/support-demos --steps "$steps" --batch-size 8 --learning-rate 1e-4 \
    --lora-rank 16 --poll-interval-sec 1 >"$data/out" 2>&1
  local kb; kb=$(tail -n1 "$data/rss")
  local loss; loss=$(grep -o 'loss [0-9.]*' "$data/out" | tail -n1 || true)
  echo "$1 $2 $((kb / 1024)) ${loss:-?}"
  rm -rf "$data"
}
{
  run dir none
  run gguf as_stored
  run gguf none
  run dir nf4
  run dir q8_0
  run bf16 none
  run bf16 nf4
} | awk 'NR == 1 { f32 = $3 } { printf "%-5s %-10s peak RSS %5d MB  %.2fx of the f32 job  %s %s\n", $1, $2, $3, $3 / f32, $4, $5 }'
