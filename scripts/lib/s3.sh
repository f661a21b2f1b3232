# shellcheck shell=bash
# A throwaway S3-compatible server on loopback for tests: moto's standalone server (PyPI moto[server]) in
# its own virtualenv under .cache/venv-s3. Source this file (and scripts/lib/venv.sh), then:
#   s3_start DIR -> starts it, creates the bucket dn-test and exports DN_TEST_S3_ENDPOINT,
#                   DN_TEST_S3_BUCKET and the AWS_* credentials and region the clients read
#   s3_stop      -> stops it and deletes DIR
# moto keeps objects in memory; the tests keep theirs apart by organization and job id.

s3_start() {
  S3_DIR=$1
  local root venv port
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  venv=$root/.cache/venv-s3
  ensure_venv "$venv" "$root/scripts/requirements-s3.txt"
  rm -rf "$S3_DIR" && mkdir -p "$S3_DIR"
  port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
  "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$S3_DIR/server.log" 2>&1 &
  S3_PID=$!
  export S3_DIR S3_PID
  export DN_TEST_S3_ENDPOINT="http://127.0.0.1:$port" DN_TEST_S3_BUCKET=dn-test
  export AWS_ACCESS_KEY_ID=dn-test AWS_SECRET_ACCESS_KEY=dn-test AWS_DEFAULT_REGION=us-east-1
  local tries=0
  until "$venv/bin/python" - "$DN_TEST_S3_ENDPOINT/$DN_TEST_S3_BUCKET" <<'PY' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen(urllib.request.Request(sys.argv[1], method="PUT"), timeout=2)
PY
  do
    tries=$((tries + 1))
    if [ "$tries" -ge 100 ] || ! kill -0 "$S3_PID" 2>/dev/null; then
      cat "$S3_DIR/server.log" >&2
      echo "the S3 server did not start" >&2
      return 1
    fi
    sleep 0.2
  done
  echo "S3 (moto) running on $DN_TEST_S3_ENDPOINT, bucket $DN_TEST_S3_BUCKET" >&2
}

s3_stop() {
  [ -n "${S3_PID:-}" ] && kill "$S3_PID" 2>/dev/null && wait "$S3_PID" 2>/dev/null
  [ -n "${S3_DIR:-}" ] && rm -rf "$S3_DIR"
  unset S3_PID S3_DIR
  return 0
}
