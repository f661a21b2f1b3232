# shellcheck shell=bash
# Source this file. `dn_serve_start DN WORK [SERVE ARGS...]` starts `dn serve` on a free loopback port with
# its data in WORK/data and its output in WORK/serve.{out,err}, waits (10 s at most) for the API key it
# prints on its first start, and sets DN_SERVE_PORT, DN_SERVE_KEY and DN_SERVE_PID. `dn_serve_stop` stops
# it (safe to call from an EXIT trap, started or not).
dn_serve_start() {
  local dn=$1 work=$2
  shift 2
  DN_SERVE_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$dn" serve --listen "127.0.0.1:$DN_SERVE_PORT" --data-dir "$work/data" "$@" \
    >"$work/serve.out" 2>"$work/serve.err" &
  DN_SERVE_PID=$!
  for _ in $(seq 1 100); do
    grep -q '^dn_' "$work/serve.out" 2>/dev/null && break
    sleep 0.1
  done
  DN_SERVE_KEY=$(grep '^dn_' "$work/serve.out" | head -n1)
  [ -n "$DN_SERVE_KEY" ] || { cat "$work/serve.err" >&2; echo "dn serve printed no key" >&2; return 1; }
}

dn_serve_stop() {
  if [ -n "${DN_SERVE_PID:-}" ]; then
    kill "$DN_SERVE_PID" 2>/dev/null && wait "$DN_SERVE_PID" 2>/dev/null
  fi
  return 0
}

# Sets $work to a new temporary directory, removed (after the server is stopped) when the script exits.
dn_serve_workdir() {
  work=$(mktemp -d)
  trap 'dn_serve_stop; rm -rf "$work"' EXIT
}
