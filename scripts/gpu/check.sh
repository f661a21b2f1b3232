#!/usr/bin/env bash
# The GPU check, as one `device` call from the repository root with target/gpu/payload carried (built
# here by scripts/gpu/build.sh):
#   run: bash scripts/gpu/check.sh     carry: ["target/gpu/payload"]     timeout_s: 540
# 1. the environment: nvidia-smi, the CUDA libraries dn will open;
# 2. dn's gpu_check: CUDA bf16 against the CPU engine in f32 on a random SmolLM2-shaped model, three
#    training steps with checkpoints and a resume, a Llama-3.1-8B-shaped model at 2 and 4 layers (step
#    time, peak memory, extrapolated tokens/s and MFU at 32 layers);
# 3. PyTorch + transformers + PEFT on the same shapes on the same GPU (scripts/gpu/peer.py);
# 4. a real job through dn's server and worker on the GPU (`dn train sft --local`, the tiny Llama).
# Writes $OUT/gpu_check.json (everything, with a summary) and $OUT/check.log. Takes 3-6 minutes.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-$root/target/gpu/out}
mkdir -p "$out"
exec > >(tee "$out/check.log") 2>&1
started=$(date +%s)
bin=$(mktemp -d)
for name in dn gpu_check; do
  python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
    "$root/target/gpu/payload/$name.xz" "$bin/$name" && chmod +x "$bin/$name"
done
echo "payload built from commit $(cat "$root/target/gpu/payload/commit" 2>/dev/null)"
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,compute_cap --format=csv \
  | tee "$out/nvidia-smi.csv"
# dn opens the driver's libcuda from the system and cuBLAS / cuRAND wherever they are: here, the wheels
# PyTorch installed.
libs=$(python3 - <<'PY'
import glob, os, site
dirs = set()
for base in site.getsitepackages() + [site.getusersitepackages()]:
    for d in glob.glob(os.path.join(base, "nvidia", "**", "lib"), recursive=True):
        if glob.glob(os.path.join(d, "libcublas*.so*")) or glob.glob(os.path.join(d, "libcurand*.so*")):
            dirs.add(d)
print(":".join(sorted(dirs)))
PY
)
export LD_LIBRARY_PATH=$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
echo "CUDA libraries from: $libs"
for lib in libcuda.so.1 libcublas.so.13 libcublasLt.so.13 libcurand.so.10; do
  python3 -c "import ctypes, sys; ctypes.CDLL(sys.argv[1])" "$lib" 2>/dev/null \
    && echo "  $lib: loads" || echo "  $lib: MISSING"
done

echo "== dn gpu_check"
timeout 300 "$bin/gpu_check" --out "$out/dn.json" > /dev/null
echo "gpu_check exit $?"

echo "== PyTorch + PEFT peer"
timeout 150 python3 "$root/scripts/gpu/peer.py" --out "$out/peer.json" > /dev/null
echo "peer exit $?"

echo "== a dn job on the GPU"
work=$(mktemp -d)
HOME=$work DN_DEVICE=cuda timeout 90 "$bin/dn" train sft --local --data-dir "$work/data" \
  --model "$root/tests/fixtures/families/llama/model" \
  --capability "$root/examples/capabilities/support-agent" \
  --dataset "$root/examples/datasets/support-demos" --eval-dataset "$root/examples/datasets/support-eval" \
  --steps 3 --batch-size 4 --max-sequence-length 256 --lora-rank 8 --eval-samples 1 \
  --poll-interval-sec 0.2 --timeout-sec 80 > "$out/local_job.log" 2>&1
echo "local job exit $?"
tail -n 12 "$out/local_job.log"

python3 - "$out" "$(( $(date +%s) - started ))" <<'PY'
import json, os, sys
out, seconds = sys.argv[1], int(sys.argv[2])
def load(name):
    try:
        return json.load(open(os.path.join(out, name)))
    except Exception as e:
        return {"ok": False, "error": f"{name}: {e}"}
dn, peer = load("dn.json"), load("peer.json")
log = open(os.path.join(out, "local_job.log")).read() if os.path.exists(os.path.join(out, "local_job.log")) else ""
local = {"ok": "completed tinker/sft" in log and "training started on cuda" in log,
         "log_tail": log.strip().splitlines()[-12:]}
t = dn.get("throughput", {}).get("extrapolated_32_layers", {})
p = peer.get("extrapolated_32_layers", {})
summary = {
    "parity_ok": dn.get("parity", {}).get("ok"),
    "loss_abs_diff": dn.get("parity", {}).get("loss_abs_diff"),
    "grad_cosine": dn.get("parity", {}).get("grad_cosine_global"),
    "training_resume_ok": dn.get("training", {}).get("ok"),
    "dn_tokens_per_second_8b": t.get("tokens_per_second"),
    "dn_mfu_8b": t.get("mfu"),
    "dn_peak_gib_8b": t.get("peak_gib"),
    "peer_tokens_per_second_8b": p.get("tokens_per_second"),
    "peer_peak_gib_8b": p.get("peak_gib"),
    "dn_over_peer": (t["tokens_per_second"] / p["tokens_per_second"])
        if t.get("tokens_per_second") and p.get("tokens_per_second") else None,
    "local_job_ok": local["ok"],
    "check_seconds": seconds,
}
report = {"ok": bool(dn.get("ok") and peer.get("ok") and local["ok"]), "summary": summary,
          "dn": dn, "peer": peer, "local_job": local}
json.dump(report, open(os.path.join(out, "gpu_check.json"), "w"), indent=2)
print(json.dumps(summary, indent=2))
PY
