#!/usr/bin/env bash
# Invariants of ARCHITECTURE.md that the dependency graph can prove: each "must not depend on" holds.
set -euo pipefail
cd "$(dirname "$0")/.."
failures=0
checks=0
forbid() { # crate, forbidden dependency
  checks=$((checks + 1))
  if cargo tree -p "$1" -e normal --prefix none 2>/dev/null | awk '{print $1}' | grep -qx "$2"; then
    echo "FAILED: $1 depends on $2"
    failures=$((failures + 1))
  else
    echo "ok: $1 does not depend on $2"
  fi
}
for dep in tokio sqlx axum candle-core object_store reqwest; do forbid dn-types "$dep"; forbid dn-arch "$dep"; forbid dn-spec "$dep"; done
for dep in utoipa chrono semver; do forbid dn-spec "$dep"; done
for dep in tokenizers minijinja safetensors; do forbid dn-arch "$dep"; done
for dep in axum candle-core; do forbid dn-store "$dep"; forbid dn-registry "$dep"; done
for dep in tokio sqlx axum candle-core; do forbid dn-data "$dep"; forbid dn-render "$dep"; done
for dep in tokio sqlx axum object_store reqwest; do forbid dn-train "$dep"; done
# Model files (GGUF, shards, hub, inventory) live in dn-model; templates and tokenization in dn-render,
# which sits above it: what needs model files alone does not pull in templates.
for dep in dn-render minijinja tokio sqlx axum candle-core; do forbid dn-model "$dep"; done
forbid dn-train dn-render
forbid dn-server dn-render
forbid dn-worker axum
forbid dn-server candle-core
forbid dn-server dn-train
forbid dn-client candle-core
forbid dn-client sqlx
# dn-train's two executors: the CPU engine (src/cpu/) and the candle graph (src/graph/, the only place
# autograd runs) import nothing from each other; what they share lives beside them (batch, model, kernels).
exclusive() { # description, command that must print nothing
  checks=$((checks + 1))
  local found
  found=$(eval "$2" || true)
  if [ -n "$found" ]; then
    echo "FAILED: $1:"
    echo "$found"
    failures=$((failures + 1))
  else
    echo "ok: $1"
  fi
}
train=crates/dn-train/src
exclusive "the CPU engine imports nothing from the graph" "grep -rn 'crate::graph' $train/cpu"
exclusive "the graph imports nothing from the CPU engine" "grep -rn 'crate::cpu' $train/graph"
exclusive "autograd runs in src/graph/ only" "grep -rln 'GradStore\\|\\.backward()' $train | grep -v '^$train/graph/'"
exclusive "dn-render holds no model-file modules" "ls crates/dn-render/src | grep -E '^(gguf|hub|inventory|weights|model_files|import)'"
echo "$((checks - failures)) passed, $failures failed"
[ "$failures" -eq 0 ]
