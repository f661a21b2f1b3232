#!/usr/bin/env bash
# The GPU check, as one `device` call from the repository root with target/gpu/payload carried (built
# here by scripts/gpu/build.sh):
#   run: bash scripts/gpu/check.sh     carry: ["target/gpu/payload"]     timeout_s: 420
# 1. the environment: nvidia-smi, then `dn doctor` (the device dn picks, each CUDA library and its file);
# 2. a preflight of seconds (gpu_check --only preflight: a bf16 matmul, one kernel of each candle module
#    the trainer uses, randn, an f64 reduction, each against the CPU): when it fails, the environment is
#    at fault and the model parts are skipped;
# 3. dn's gpu_check: CUDA bf16 against the CPU engine in f32 on a random SmolLM2-shaped model, three
#    training steps with checkpoints and a resume, a Llama-3.1-8B-shaped model at 2 and 4 layers (step
#    time, peak memory, extrapolated tokens/s and MFU at 32 layers); its JSON is rewritten after each part;
# 4. PyTorch + transformers + PEFT on the same shapes on the same GPU (scripts/gpu/peer.py);
# 5. a real job through dn's server and worker on the GPU (`dn train sft --local`, the tiny Llama).
# Writes $OUT/gpu_check.json (everything, with a summary), the parts' own JSON and $OUT/check.log. Each
# step has its own time limit (about 400 s together at worst; the preflight's includes compiling
# candle's kernels from PTX, cached for the rest), so the summary is written within the call's 420 s;
# a run that goes well takes 3-4 minutes, which leaves a 15-minute lease room for a rerun.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-$root/target/gpu/out}
mkdir -p "$out"
started=$(date +%s)
# One CUDA JIT cache for every process of the check (gpu_check, the job's worker): candle's kernels are
# compiled from PTX once.
export CUDA_CACHE_PATH=${CUDA_CACHE_PATH:-/tmp/dn-cuda-cache} CUDA_CACHE_MAXSIZE=4294967296
mkdir -p "$CUDA_CACHE_PATH"

{
bin=$(mktemp -d)
for name in dn gpu_check; do
  python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
    "$root/target/gpu/payload/$name.xz" "$bin/$name" && chmod +x "$bin/$name"
done
echo "payload built from commit $(cat "$root/target/gpu/payload/commit" 2>/dev/null)"
timeout -k 5 10 nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,compute_cap \
  --format=csv | tee "$out/nvidia-smi.csv"
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

echo "== dn doctor"
timeout -k 5 10 "$bin/dn" doctor --device cuda
timeout -k 5 10 "$bin/dn" --json doctor --device cuda > "$out/doctor.json" 2>/dev/null

echo "== preflight"
timeout -k 5 80 "$bin/gpu_check" --only preflight --out "$out/preflight.json" > /dev/null
preflight=$?
echo "preflight exit $preflight"
# A preflight that failed tells an environment fault; one that ran out of time (compiling candle's
# kernels from PTX the first time, say) lets dn's parts run and tell.
case $preflight in
  0) run_dn=1 ;;
  124|137) run_dn=1; echo "the preflight ran out of time: dn's parts run anyway" ;;
  *) run_dn=0 ;;
esac

if [ "$run_dn" = 1 ]; then
  echo "== dn gpu_check"
  timeout -k 5 165 "$bin/gpu_check" --skip preflight --out "$out/dn.json" > /dev/null
  echo "gpu_check exit $?"
else
  echo "the preflight failed: the environment is at fault; dn's model parts and job are skipped"
fi

echo "== PyTorch + PEFT peer"
timeout -k 5 75 python3 "$root/scripts/gpu/peer.py" --out "$out/peer.json" > /dev/null
echo "peer exit $?"

if [ "$run_dn" = 1 ]; then
  echo "== a dn job on the GPU"
  work=$(mktemp -d)
  DN_DEVICE=cuda timeout -k 5 45 "$bin/dn" train sft --local --data-dir "$work/data" \
    --model "$root/tests/fixtures/families/llama/model" \
    --capability "$root/examples/capabilities/support-agent" \
    --dataset "$root/examples/datasets/support-demos" --eval-dataset "$root/examples/datasets/support-eval" \
    --steps 3 --batch-size 4 --max-sequence-length 256 --lora-rank 8 --eval-samples 1 \
    --poll-interval-sec 0.2 --timeout-sec 40 > "$out/local_job.log" 2>&1
  echo "local job exit $?"
  tail -n 12 "$out/local_job.log"
fi

python3 - "$out" "$(( $(date +%s) - started ))" <<'PY'
import json, os, sys
out, seconds = sys.argv[1], int(sys.argv[2])
def load(name):
    try:
        return json.load(open(os.path.join(out, name)))
    except Exception as e:
        return {"ok": False, "error": f"{name}: {e}"}
doctor, preflight, dn, peer = load("doctor.json"), load("preflight.json"), load("dn.json"), load("peer.json")
log = open(os.path.join(out, "local_job.log")).read() if os.path.exists(os.path.join(out, "local_job.log")) else ""
local = {"ok": "completed tinker/sft" in log and "training started on cuda" in log,
         "log_tail": log.strip().splitlines()[-12:]}
t = dn.get("throughput", {}).get("extrapolated_32_layers", {})
p = peer.get("extrapolated_32_layers", {})
summary = {
    "device": doctor.get("device", {}).get("device"),
    "device_error": doctor.get("device", {}).get("error"),
    "environment_error": preflight.get("environment", {}).get("error"),
    "preflight_ok": preflight.get("preflight", {}).get("ok"),
    "preflight_failed": [c.get("check") for c in preflight.get("preflight", {}).get("checks", [])
                         if not c.get("ok")],
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
    "dn_check_complete": dn.get("complete"),
    "local_job_ok": local["ok"],
    "check_seconds": seconds,
}
report = {"ok": bool(preflight.get("ok") and dn.get("ok") and peer.get("ok") and local["ok"]),
          "summary": summary, "doctor": doctor, "preflight": preflight.get("preflight"), "dn": dn,
          "peer": peer, "local_job": local}
json.dump(report, open(os.path.join(out, "gpu_check.json"), "w"), indent=2)
print(json.dumps(summary, indent=2))
PY
} 2>&1 | tee "$out/check.log"
