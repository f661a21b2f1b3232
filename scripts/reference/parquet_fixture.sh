#!/usr/bin/env bash
# Regenerates crates/dn-data/tests/fixtures/rows.parquet with pyarrow.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
python=$("$root/scripts/reference/venv.sh")
mkdir -p "$root/crates/dn-data/tests/fixtures"
"$python" "$root/scripts/reference/parquet_fixture.py" "$root/crates/dn-data/tests/fixtures/rows.parquet"
