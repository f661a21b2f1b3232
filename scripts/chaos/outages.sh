#!/usr/bin/env bash
# Outage probes with figures: PostgreSQL stopped, S3 refusing connections, the worker's disk full and
# `dn serve` killed, each for 10, 30 and 90 s under a running job of the test model (release build, one
# worker with production leases). Prints a table and writes docs/outages.json. Needs root (the worker's
# scratch is a tmpfs this script fills). About 30 minutes.
#   bash scripts/chaos/outages.sh [--faults database,storage,disk,server] [--lengths 10,30,90]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
model=$(scripts/fetch-test-model.sh)
cargo build --release -p dn-cli >&2
work=$(mktemp -d /tmp/dn-chaos.XXXXXX)
chmod 755 "$work" # the cluster runs as the postgres user
source scripts/lib/postgres.sh
source scripts/lib/venv.sh
source scripts/lib/s3.sh
trap 'pg_stop; s3_stop; umount "$work/scratch" 2>/dev/null || true; rm -rf "$work"' EXIT
pg_start "$work/pg"
s3_start "$work/s3"
python3 scripts/chaos/outages.py --dn "$root/target/release/dn" --model "$model" --work "$work" \
  --pg-url "$DN_TEST_DATABASE_URL" --pg-dir "$work/pg" --s3-endpoint "$DN_TEST_S3_ENDPOINT" \
  --s3-bucket "$DN_TEST_S3_BUCKET" --examples "$root/examples" --root "$root" \
  --out "$root/docs/outages.json" "$@"
