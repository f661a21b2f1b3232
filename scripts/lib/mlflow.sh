# shellcheck shell=bash
# A throwaway MLflow tracking server on loopback for tests: `mlflow server` (PyPI mlflow) in its own
# virtualenv under .cache/venv-mlflow, its runs in SQLite and its artifacts (served through the tracking
# server's artifact proxy, MLflow's default) under DIR. Source this file (and scripts/lib/venv.sh), then:
#   mlflow_start DIR -> starts it and exports DN_TEST_MLFLOW_URI
#   mlflow_stop      -> stops it and deletes DIR

mlflow_start() {
  MLFLOW_DIR=$1
  local root venv port
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  venv=$root/.cache/venv-mlflow
  ensure_venv "$venv" "$root/scripts/requirements-mlflow.txt"
  rm -rf "$MLFLOW_DIR" && mkdir -p "$MLFLOW_DIR"
  port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
  # Its own process group, so that stopping it stops its workers too.
  setsid "$venv/bin/mlflow" server --host 127.0.0.1 --port "$port" --workers 1 \
    --backend-store-uri "sqlite:///$MLFLOW_DIR/mlflow.db" \
    --artifacts-destination "$MLFLOW_DIR/artifacts" >"$MLFLOW_DIR/server.log" 2>&1 &
  MLFLOW_PID=$!
  export MLFLOW_DIR MLFLOW_PID
  export DN_TEST_MLFLOW_URI="http://127.0.0.1:$port"
  local tries=0
  until "$venv/bin/python" - "$DN_TEST_MLFLOW_URI/health" <<'PY' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2)
PY
  do
    tries=$((tries + 1))
    if [ "$tries" -ge 300 ] || ! kill -0 "$MLFLOW_PID" 2>/dev/null; then
      cat "$MLFLOW_DIR/server.log" >&2
      echo "the MLflow server did not start" >&2
      return 1
    fi
    sleep 0.2
  done
  echo "MLflow running on $DN_TEST_MLFLOW_URI" >&2
}

mlflow_stop() {
  [ -n "${MLFLOW_PID:-}" ] && kill -- "-$MLFLOW_PID" 2>/dev/null && wait "$MLFLOW_PID" 2>/dev/null
  [ -n "${MLFLOW_DIR:-}" ] && rm -rf "$MLFLOW_DIR"
  unset MLFLOW_PID MLFLOW_DIR
  return 0
}
