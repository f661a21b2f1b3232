#!/usr/bin/env bash
# The one entry point of the reference scripts. Each writes what the Rust tests read (a JSON fixture, a
# small model) or checks dn against the reference implementation, with transformers, PEFT or the reference
# SDK in a virtualenv of its own under $DN_CACHE_DIR (default .cache). CI runs only `sdk-check`.
#
#   scripts/reference/run.sh NAME [ARGS]
#
#   chat-parity          crates/dn-render/tests/fixtures/smollm2_chat_parity.json (transformers)
#   gguf-import          crates/dn-render/tests/fixtures/smollm2_import_reference.json (gguf-py + transformers)
#   parquet-fixture      crates/dn-data/tests/fixtures/rows.parquet (pyarrow)
#   train-parity         crates/dn-train/tests/fixtures/smollm2_train_parity.json (transformers + PEFT)
#   families [FAMILY..]  tests/fixtures/families/: each family's tiny random model saved by transformers 5 and
#                        PEFT's training reference (family_models.py), the older config layout as
#                        transformers 4.57 wrote it (family_legacy.py), chat-template parity cases
#                        (family_chat.py), GGUF files of the qwen2 and qwen3 models (family_gguf.py)
#   bnb-models [VARIANT..]
#                        tests/fixtures/bnb/: a tiny Llama quantized by bitsandbytes 0.50 (CPU) through
#                        transformers' load_in_4bit as nf4-dq, nf4, fp4-dq, and bitsandbytes' decoding of it
#   ggml-fixture         crates/dn-model/tests/fixtures/ggml_types.safetensors: blocks of every ggml type dn
#                        reads (Q4_0 .. Q6_K) and gguf-py's dequantization of them
#   mxfp4-fixture        crates/dn-model/tests/fixtures/mxfp4.safetensors: an MXFP4 tensor packed per the OCP MX
#                        spec and transformers' decoding of it (transformers)
#   gpt-oss-mxfp4        tests/fixtures/families/gpt_oss/mxfp4/: the tiny gpt-oss model with MXFP4 experts, and
#                        transformers' logits for it (after `families gpt_oss`)
#   generate-parity      greedy generation references: each family's generate.json and
#                        tests/fixtures/generate/ (SmolLM2 with a PEFT adapter)
#   merge-check          `dn model merge` of the SmolLM2 fixture adapter, loaded in transformers and held to
#                        base + PEFT (tests/fixtures/generate/merge_check.json); needs target/debug/dn
#   gguf-check           dn's GGUF export read by the `gguf` package and run by llama.cpp (llama-cpp-python
#                        built from source: minutes the first time; tests/fixtures/generate/gguf_check.json);
#                        needs target/debug/dn
#   gguf-check-moe       dn's GGUF export of a qwen3_moe job (the router adapted too) read by transformers'
#                        GGUF loader and llama.cpp, logits against the merged directory
#                        (tests/fixtures/generate/gguf_moe_check.json); llama.cpp after `gguf-check`
#   peft-eval            a `dn train sft --local` job's final adapter evaluated by PEFT: its eval loss must
#                        equal the job's within 1e-3 relative (scripts/reference/peft_eval.out)
#   peft-eval-families [FAMILY..]
#                        the same on each family's tiny model, gemma3/multimodal included, and
#                        FAMILY:router (qwen3_moe:router, gpt_oss:router: the router adapted too), and the
#                        bitsandbytes 4-bit bases bnb/nf4-dq, bnb/nf4, bnb/fp4-dq (PEFT over bitsandbytes)
#                        (scripts/reference/peft_eval_families.out)
#   peft-eval-bnb-smollm2
#                        SmolLM2 quantized by bitsandbytes (nf4, double quant), a job on it kept 4-bit, PEFT +
#                        bitsandbytes reproducing its eval loss (scripts/reference/peft_eval_bnb_smollm2.out)
#   tensorboard-read     TensorBoard's own reader (PyPI tensorboard) on dn's event-file fixture:
#                        tests/fixtures/tensorboard/read_by_tensorboard.json
#   sdk-check [DN]       the reference SDK (PyPI dreadnode==2.0.52) against a real `dn serve` on loopback
#   python ref|torch|families
#                        prints the python of that virtualenv (for scripts/bench)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/scripts/reference
cache=${DN_CACHE_DIR:-$root/.cache}
# shellcheck source=scripts/lib/venv.sh
source "$root/scripts/lib/venv.sh"

# The python of a reference virtualenv, created (or refreshed) from its requirements file.
python_of() {
  local name=$1 req
  case $name in
    ref) req=$here/requirements.txt ;;
    torch) req=$here/requirements-torch.txt ;;
    families) req=$here/requirements-families.txt ;;
    tracking) req=$here/requirements-tracking.txt ;;
    *) echo "no virtualenv $name (ref, torch, families or tracking)" >&2; return 2 ;;
  esac
  ensure_venv "$cache/venv-$name" "$req"
  echo "$cache/venv-$name/bin/python"
}

test_model() { "$root/scripts/fetch-test-model.sh"; }

# The capability's system prompt as dn applies it: the agent file's body, front matter removed, trimmed.
system_prompt() {
  "$1" - "$root/examples/capabilities/support-agent/agents/support.md" <<'PY'
import sys
text = open(sys.argv[1]).read()
if text.startswith("---"):
    text = text.split("\n---", 2)[1].split("\n", 1)[1] if "\n---" in text[3:] else text
print(text.strip(), end="")
PY
}

# A job on the example data, then its eval set rendered as dn renders it:
# `train_and_render MODEL WORK NAME LEARNING_RATE [MAX_SEQUENCE_LENGTH [TARGET_MODULES]]` writes
# WORK/job-NAME.json and WORK/eval-NAME.jsonl (WORK/prompt.txt holds the system prompt).
train_and_render() {
  local dn=$root/target/debug/dn model=$1 work=$2 name=$3 rate=$4 length=() targets=()
  [ -z "${5:-}" ] || length=(--max-sequence-length "$5")
  [ -z "${6:-}" ] || targets=(--lora-target-modules "$6")
  "$dn" --json train sft --local --data-dir "$work/data-$name" --model "$model" \
    --capability examples/capabilities/support-agent --dataset examples/datasets/support-demos \
    --eval-dataset examples/datasets/support-eval --steps 4 --batch-size 4 --learning-rate "$rate" \
    --lora-rank 8 "${length[@]}" "${targets[@]}" --poll-interval-sec 1 >"$work/job-$name.json"
  "$dn" --json data preview --model "$model" --file examples/datasets/support-eval/eval.jsonl \
    --system-prompt-file "$work/prompt.txt" "${length[@]}" --limit 1000 >"$work/eval-$name.jsonl"
}

# The reference SDK (PyPI dreadnode==2.0.52, in its own virtualenv) against a real `dn serve` on loopback.
sdk_check() {
  local dn=${1:-$root/target/debug/dn}
  mkdir -p "$cache"
  venv=$cache/venv-sdk
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import dreadnode.app.api.client" 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    # A full install fails on dependency conflicts; the API client needs only these.
    { "$venv/bin/pip" install -q --no-deps dreadnode==2.0.52 \
        && "$venv/bin/pip" install -q httpx pydantic loguru "logfire<5" truststore; } >"$cache/pip-sdk.log" 2>&1 \
      || { cat "$cache/pip-sdk.log" >&2; exit 1; }
  fi

  # shellcheck source=scripts/lib/dn_serve.sh
  source "$root/scripts/lib/dn_serve.sh"
  dn_serve_workdir

  mkdir -p "$work/model" "$work/cap/agents" "$work/eval"
  cat >"$work/model/config.json" <<'JSON'
{"model_type":"llama","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,
 "vocab_size":256,"max_position_embeddings":512}
JSON
  printf 'schema: 1\nname: support-agent\nversion: 1.0.0\ndescription: Answers tickets\n' >"$work/cap/capability.yaml"
  printf -- '---\nname: support\n---\nYou are a support agent.\n' >"$work/cap/agents/support.md"
  echo '{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}' >"$work/demos.jsonl"
  printf 'name: support-eval\nversion: 0.1.0\nformat: jsonl\n' >"$work/eval/dataset.yaml"
  cp "$work/demos.jsonl" "$work/eval/eval.jsonl"

  dn_serve_start "$dn" "$work" --workers 0 --model "$work/model"
  port=$DN_SERVE_PORT key=$DN_SERVE_KEY
  other=$("$dn" keys create --org rival --data-dir "$work/data")

  export DN_SERVER="http://127.0.0.1:$port" DN_API_KEY="$key" DN_WORKSPACE=main
  "$dn" capability push "$work/cap" >/dev/null
  "$dn" dataset push "$work/demos.jsonl" --name support-demos --version 0.1.0 >/dev/null
  "$dn" dataset push "$work/eval" >/dev/null
  "$venv/bin/python" "$root/scripts/reference/sdk_roundtrip.py" "http://127.0.0.1:$port" "$key" "$other" "$work/model"
}

name=${1:-}
[ -n "$name" ] || { sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
shift
case $name in
  python) python_of "${1:-}" ;;
  chat-parity)
    "$(python_of ref)" "$here/chat_parity.py" "$(test_model)" \
      "$root/crates/dn-render/tests/fixtures/smollm2_chat_parity.json" ;;
  gguf-import)
    "$(python_of ref)" "$here/gguf_import.py" "$(test_model)" \
      "$root/crates/dn-render/tests/fixtures/smollm2_import_reference.json" ;;
  parquet-fixture)
    mkdir -p "$root/crates/dn-data/tests/fixtures"
    "$(python_of ref)" "$here/parquet_fixture.py" "$root/crates/dn-data/tests/fixtures/rows.parquet" ;;
  train-parity)
    mkdir -p "$root/crates/dn-train/tests/fixtures"
    "$(python_of torch)" "$here/train_parity.py" "$(test_model)" \
      "$root/crates/dn-train/tests/fixtures/smollm2_train_parity.json" ;;
  families)
    python=$(python_of families) legacy=$(python_of ref)
    "$python" "$here/family_models.py" "$@"
    "$legacy" "$here/family_legacy.py" "$@"
    "$python" "$here/family_chat.py" "$@"
    "$python" "$here/family_gguf.py" "$@" ;;
  mxfp4-fixture)
    "$(python_of families)" "$here/mxfp4_fixture.py" ;;
  ggml-fixture)
    "$(python_of families)" "$here/ggml_fixture.py" ;;
  bnb-models)
    "$(python_of families)" "$here/bnb_models.py" "$@"
    chmod 644 "$root"/tests/fixtures/bnb/*/* ;;
  gpt-oss-mxfp4)
    "$(python_of families)" "$here/gpt_oss_mxfp4.py" ;;
  tensorboard-read)
    "$(python_of tracking)" "$here/tensorboard_read.py" "$root/tests/fixtures/tensorboard" ;;
  generate-parity)
    mkdir -p "$root/tests/fixtures/generate"
    "$(python_of families)" "$here/generate_parity.py" "$(test_model)"
    # PEFT's model card is not part of the adapter.
    rm -f "$root/tests/fixtures/generate/smollm2-adapter/README.md"
    chmod 644 "$root/tests/fixtures/generate/smollm2-adapter/"* ;;
  merge-check)
    python=$(python_of families) gguf=$(test_model) work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    adapter=$root/tests/fixtures/generate/smollm2-adapter
    "$root/target/debug/dn" model merge --base "$gguf" --adapter "$adapter" --out "$work/merged" --dtype f32
    "$python" "$here/merge_check.py" "$gguf" "$work/merged" "$adapter" \
      "$root/tests/fixtures/generate/merge_check.json" ;;
  gguf-check)
    venv=$cache/venv-llamacpp
    if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import llama_cpp, gguf' 2>/dev/null; then
      python3 -m venv "$venv"
      "$venv/bin/pip" install -q llama-cpp-python==0.3.36 gguf==0.19.0 numpy safetensors
    fi
    gguf=$(test_model) work=$(mktemp -d) dn=$root/target/debug/dn
    trap 'rm -rf "$work"' EXIT
    adapter=$root/tests/fixtures/generate/smollm2-adapter
    "$dn" model merge --base "$gguf" --adapter "$adapter" --out "$work/merged" --dtype f32
    "$dn" model merge --base "$gguf" --adapter "$adapter" --out "$work/f32.gguf" --format gguf --dtype f32
    "$dn" model merge --base "$gguf" --adapter "$adapter" --out "$work/q8_0.gguf" --format gguf --quant q8_0
    "$venv/bin/python" "$here/gguf_check.py" "$work/f32.gguf" "$work/q8_0.gguf" "$work/merged" \
      "$root/tests/fixtures/generate/smollm2.json" "$root/tests/fixtures/generate/gguf_check.json" ;;
  gguf-check-moe)
    # A job on the all-sparse qwen3_moe model (router adapted too), merged, exported to GGUF, read back by
    # transformers' GGUF loader and (when the gguf-check virtualenv is there) llama.cpp.
    cd "$root"
    python=$(python_of families) work=$(mktemp -d) dn=$root/target/debug/dn
    trap 'rm -rf "$work"' EXIT
    cargo build -q -p dn-cli
    fixture=$root/tests/fixtures/families/qwen3_moe
    "$python" "$here/gguf_moe_check.py" base "$fixture/fused.safetensors" "$fixture/model" "$work/base"
    system_prompt "$python" >"$work/prompt.txt"
    train_and_render "$work/base" "$work" moe 1e-2 512 q_proj,k_proj,v_proj,o_proj,gate,gate_up_proj,down_proj
    adapter=$work/data-moe/storage/$("$python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["artifacts"]["adapter"])' "$work/job-moe.json")
    "$dn" model merge --base "$work/base" --adapter "$adapter" --out "$work/merged" --dtype f32
    "$dn" model merge --base "$work/base" --adapter "$adapter" --out "$work/model.gguf" --format gguf --dtype f32
    out=$root/tests/fixtures/generate/gguf_moe_check.json
    "$python" "$here/gguf_moe_check.py" check "$work/model.gguf" "$work/merged" "$out"
    # llama.cpp, from the gguf-check virtualenv (llama-cpp-python built from source there).
    if "$cache/venv-llamacpp/bin/python" -c 'import llama_cpp' 2>/dev/null; then
      "$cache/venv-llamacpp/bin/python" "$here/gguf_moe_check.py" llama "$work/model.gguf" "$out"
    else
      rm -f "${out%.json}.npz"
      echo "no $cache/venv-llamacpp: run gguf-check once to build llama.cpp, then this again" >&2
    fi ;;
  peft-eval)
    cd "$root"
    python=$(python_of torch) gguf=$(test_model) work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    cargo build -q -p dn-cli
    system_prompt "$python" >"$work/prompt.txt"
    train_and_render "$gguf" "$work" smollm2 1e-3
    "$python" "$here/peft_eval.py" "$gguf" "$work/job-smollm2.json" "$work/eval-smollm2.jsonl" \
      "$work/data-smollm2/storage" 2>/dev/null | tee "$here/peft_eval.out" ;;
  peft-eval-families)
    cd "$root"
    python=$(python_of families) work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    cargo build -q -p dn-cli
    system_prompt "$python" >"$work/prompt.txt"
    families=("$@")
    [ ${#families[@]} -gt 0 ] || families=(llama mistral qwen2 qwen3 gemma2 gemma3 gemma3/multimodal phi3 qwen3_moe qwen2_moe gpt_oss mixtral qwen3_moe:router gpt_oss:router bnb/nf4-dq bnb/nf4 bnb/fp4-dq)
    status=0
    : >"$work/out"
    for family in "${families[@]}"; do
      # FAMILY:router: the router adapted too (`gate`, gpt-oss's `router`), with attention and experts.
      targets=
      if [[ $family == *:router ]]; then
        family=${family%:router} router=gate
        [ "$family" != gpt_oss ] || router=router
        targets=q_proj,k_proj,v_proj,o_proj,$router,gate_up_proj,down_proj
      fi
      case $family in
        bnb/*) model=tests/fixtures/$family ;;
        */*) model=tests/fixtures/families/$family ;;
        *) model=tests/fixtures/families/$family/model ;;
      esac
      family=${family//\//-}${targets:+-router}
      train_and_render "$model" "$work" "$family" 1e-2 512 "$targets"
      "$python" "$here/peft_eval_families.py" "$family" "$model" "$work/job-$family.json" \
        "$work/eval-$family.jsonl" "$work/data-$family/storage" 2>/dev/null | tee -a "$work/out" || status=1
    done
    cp "$work/out" "$here/peft_eval_families.out"
    exit $status ;;
  peft-eval-bnb-smollm2)
    # SmolLM2 (imported from its GGUF) quantized by bitsandbytes as nf4 with double quantization, a job on
    # it with its projections kept 4-bit, and PEFT + bitsandbytes reproducing the job's eval loss.
    cd "$root"
    python=$(python_of families) gguf=$(test_model) work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    cargo build -q -p dn-cli
    "$root/target/debug/dn" model import "$gguf" --out "$work/f32" >/dev/null
    "$python" "$here/bnb_models.py" model "$work/f32" "$work/nf4-dq" 2>/dev/null
    system_prompt "$python" >"$work/prompt.txt"
    train_and_render "$work/nf4-dq" "$work" smollm2-nf4-dq 1e-3
    "$python" "$here/peft_eval_families.py" smollm2-nf4-dq "$work/nf4-dq" "$work/job-smollm2-nf4-dq.json" \
      "$work/eval-smollm2-nf4-dq.jsonl" "$work/data-smollm2-nf4-dq/storage" 2>/dev/null \
      | tee "$here/peft_eval_bnb_smollm2.out" ;;
  sdk-check) sdk_check "$@" ;;
  *) echo "no reference script $name (run scripts/reference/run.sh for the list)" >&2; exit 2 ;;
esac
