#!/usr/bin/env bash
# A `--features cuda` dn binary ($1) on a machine without a GPU: `dn doctor` probes the CUDA libraries and
# says the CPU, `--device cuda` exits at once saying why, and a local job with the default device (auto)
# trains a tiny model on the CPU and completes. Then the same binary against a stand-in driver (built here
# with gcc) that sees one GPU, with cuBLAS but no cuRAND: `auto` still trains on the CPU, and both
# `dn doctor` and the job's log warn, naming libcurand.so.10.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dn=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export HOME=$work
if [ -e /dev/nvidia0 ]; then
  echo "a GPU is present: this smoke test is for machines without one" >&2
  exit 1
fi
report=$(timeout 60 "$dn" --json doctor --data-dir "$work/data")
python3 - "$report" <<'PY' || { echo "unexpected dn doctor report: $report" >&2; exit 1; }
import json, sys
r = json.loads(sys.argv[1])
assert r["device"]["device"] == "cpu", r["device"]
assert r["cuda"]["built_with_cuda"] and "no usable CUDA GPU" in r["cuda"]["unusable"], r["cuda"]
assert r["device"]["warning"] is None and r["host"]["cores"] >= 1, r
PY
echo "dn doctor: $(timeout 60 "$dn" doctor --data-dir "$work/data" | sed -n 1p)"
if out=$(timeout 60 "$dn" worker --device cuda --data-dir "$work/data" 2>&1); then
  echo "dn worker --device cuda started without a GPU: $out" >&2
  exit 1
fi
grep -q "no usable CUDA GPU" <<<"$out" || { echo "unexpected refusal: $out" >&2; exit 1; }
echo "--device cuda refused: $(grep -o 'no usable CUDA GPU.*' <<<"$out" | head -n 1)"
# The stand-in's missing cuRAND must be missing on this machine too.
if ldconfig -p 2>/dev/null | grep -q 'libcurand\.so'; then
  echo "a cuRAND is installed here: the stand-in driver check needs a machine without one" >&2
  exit 1
fi
fake=$work/stand-in-driver
mkdir -p "$fake"
cat > "$fake/cuda.c" <<'C'
#include <stdio.h>
#include <stddef.h>
int cuInit(unsigned flags) { return 0; }
int cuDriverGetVersion(int *v) { *v = 13000; return 0; }
int cuDeviceGetCount(int *c) { *c = 1; return 0; }
int cuDeviceGet(int *d, int ordinal) { *d = ordinal; return 0; }
int cuDeviceGetName(char *name, int len, int d) { snprintf(name, len, "Stand-in GPU"); return 0; }
int cuDeviceTotalMem_v2(size_t *bytes, int d) { *bytes = (size_t)16 << 30; return 0; }
int cuDeviceGetAttribute(int *v, int attribute, int d) { *v = attribute == 75 ? 9 : 0; return 0; }
C
gcc -shared -fPIC -o "$fake/libcuda.so.1" "$fake/cuda.c"
echo 'int cublasCreate_v2(void) { return 0; }' | gcc -shared -fPIC -x c -o "$fake/libcublas.so.13" -
echo 'int cublasLtCreate(void) { return 0; }' | gcc -shared -fPIC -x c -o "$fake/libcublasLt.so.13" -
report=$(LD_LIBRARY_PATH=$fake timeout 60 "$dn" --json doctor --data-dir "$work/data")
python3 - "$report" "$fake" <<'PY' || { echo "unexpected dn doctor report: $report" >&2; exit 1; }
import json, sys
r, fake = json.loads(sys.argv[1]), sys.argv[2]
assert r["device"]["device"] == "cpu", r["device"]
assert "sees 1 GPU(s): libcurand.so.10 cannot be loaded" in r["device"]["warning"], r["device"]
c = r["cuda"]
assert c["driver_cuda_version"] == "13.0" and c["gpus"][0]["name"] == "Stand-in GPU", c
assert c["driver"]["path"] == f"{fake}/libcuda.so.1", c["driver"]
assert [l["file"] for l in c["libraries"]] == ["libcublas.so.13", "libcublasLt.so.13", None], c
PY
echo "dn doctor with a GPU it cannot use: $(LD_LIBRARY_PATH=$fake timeout 60 "$dn" doctor --data-dir "$work/data" | grep '^warning')"
out=$(LD_LIBRARY_PATH=$fake timeout 300 "$dn" train sft --local --data-dir "$work/data" \
  --model "$root/tests/fixtures/families/llama/model" \
  --capability "$root/examples/capabilities/support-agent" \
  --dataset "$root/examples/datasets/support-demos" \
  --steps 2 --batch-size 2 --max-sequence-length 128 --lora-rank 4 --eval-samples 0 \
  --poll-interval-sec 0.2 --timeout-sec 240 2>&1) || { echo "$out" >&2; exit 1; }
grep -q "training started on cpu" <<<"$out" || { echo "not trained on the CPU: $out" >&2; exit 1; }
grep -q "completed tinker/sft" <<<"$out" || { echo "job did not complete: $out" >&2; exit 1; }
grep -q "^warning --device auto trains on the CPU though the driver sees 1 GPU(s): libcurand.so.10" <<<"$out" \
  || { echo "the job's log does not warn about the unusable GPU: $out" >&2; exit 1; }
echo "the CUDA build trained on the CPU with --device auto: $(grep 'step 2/2' <<<"$out" | head -n 1)"
echo "and its job's log warned: $(grep '^warning --device auto' <<<"$out" | head -n 1)"
