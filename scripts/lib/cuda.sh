# shellcheck shell=bash
# Source this file for CUDA builds on a machine without a CUDA install or a GPU.
#
# `cuda_toolchain ROOT`: nvcc from PyPI's CUDA 13.0 wheels ($DN_CACHE_DIR/venv-cuda) on PATH, CUDA_HOME
# set, CUDA_COMPUTE_CAP 90 unless set (H100/H200), the static CUDA runtime for the linker. Enough for
# candle-kernels' PTX and static kernels, cudarc's version, and a link with no CUDA library needed.
#
# `cuda_runtime_loading ROOT`: candle-core 0.11.1 asks cudarc to link the CUDA libraries
# (`dynamic-linking`), so its binary cannot even start without libcuda.so.1. This prepares a copy of
# candle-core (from cargo's download of the same crate) whose cudarc loads them at run time instead
# (`dynamic-loading`, cudarc's own default), and sets CUDA_CARGO_ARGS to the cargo flags that patch it in.
# With it, one `--features cuda` binary serves and trains on the CPU where no GPU or driver is, and on
# the GPU where one is. The patch rewrites Cargo.lock: the function saves it and restores it on exit.
cuda_toolchain() {
  local root=$1
  local cache=${DN_CACHE_DIR:-$root/.cache}
  # shellcheck source=scripts/lib/venv.sh
  source "$root/scripts/lib/venv.sh"
  ensure_venv "$cache/venv-cuda" "$root/scripts/requirements-cuda.txt"
  local site
  site=$("$cache/venv-cuda/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  export CUDA_HOME=$site/nvidia/cu13
  export PATH=$CUDA_HOME/bin:$PATH
  export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
  # candle-kernels links its MoE/GGUF kernels with `-lcudart`: give the linker the static CUDA runtime, so
  # the binary needs no libcudart.so (it opens libcuda itself, when a kernel of those runs).
  mkdir -p "$cache/cuda-link"
  ln -sf "$CUDA_HOME/lib/libcudart_static.a" "$cache/cuda-link/libcudart.a"
  export LIBRARY_PATH=$cache/cuda-link${LIBRARY_PATH:+:$LIBRARY_PATH}
  nvcc --version | tail -n 2
}

cuda_runtime_loading() {
  local root=$1
  local cache=${DN_CACHE_DIR:-$root/.cache}
  local version
  version=$(awk '/^name = "candle-core"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' "$root/Cargo.lock")
  local dir=$cache/candle-core-$version-runtime-cuda
  if [ ! -f "$dir/Cargo.toml" ]; then
    (cd "$root" && cargo fetch --quiet)
    local crate
    crate=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/cache" -name "candle-core-$version.crate" | head -n 1)
    [ -n "$crate" ] || { echo "candle-core-$version.crate not found in cargo's cache" >&2; return 1; }
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    tar -xzf "$crate" -C "$dir.tmp" --strip-components=1
    grep -q '"dynamic-linking",' "$dir.tmp/Cargo.toml" || {
      echo "candle-core $version no longer asks cudarc for dynamic-linking: revisit scripts/lib/cuda.sh" >&2
      return 1
    }
    sed -i 's/"dynamic-linking",/"dynamic-loading",/' "$dir.tmp/Cargo.toml"
    mv "$dir.tmp" "$dir"
  fi
  CUDA_LOCK_BACKUP=$(mktemp)
  cp "$root/Cargo.lock" "$CUDA_LOCK_BACKUP"
  CUDA_LOCK_ROOT=$root
  trap 'cp "$CUDA_LOCK_BACKUP" "$CUDA_LOCK_ROOT/Cargo.lock"; rm -f "$CUDA_LOCK_BACKUP"' EXIT
  CUDA_CARGO_ARGS=(--config "patch.crates-io.candle-core.path=\"$dir\"")
}
