#!/usr/bin/env bash
# REST throughput as an outside client sees it: one release center on a throwaway
# MariaDB, driven by wrk (64 connections, 2 threads) over plain HTTP (--insecure-http,
# as the seed service is measured) and over HTTPS. Creates first (each with its own
# serial number), then reads of one device by id. Prints figures; asserts nothing.
#   BENCH_SECONDS=N   length of each run (default 10)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
work=$(mktemp -d /tmp/fleet-wrk.XXXXXX)
center_pid=""
seconds=${BENCH_SECONDS:-10}
say() { printf '==> %s\n' "$*"; }
# shellcheck source=tests/mariadb.sh
source "$root/tests/mariadb.sh"
cleanup() {
  if [[ -n "$center_pid" ]]; then kill "$center_pid" 2>/dev/null || true; wait "$center_pid" 2>/dev/null || true; fi
  stop_mariadb
  rm -rf "$work"
}
trap cleanup EXIT
install_missing
command -v wrk >/dev/null || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
cargo build --release --quiet -p center-cloud
start_mariadb

# Each wrk thread numbers its own creates, so every serial number is new.
cat >"$work/create.lua" <<'EOF'
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function init(args)
  n = 0
  token = os.getenv("TOKEN")
end
function request()
  n = n + 1
  local body = string.format('{"name":"w%d-%d","type":"gateway","hardware":{"model":"Bench","sn":"WRK-%d-%d"},'
    .. '"software":{"version":"1.0.0","last_update":"2026-01-01 10:00:00"},"status":"active"}', tid, n, tid, n)
  return wrk.format("POST", "/api/v1/devices",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}, body)
end
EOF

# run SCHEME: starts a center with or without TLS over a fresh database, creates, reads.
run() {
  local scheme=$1 port flags=() curl_tls=()
  port=$(free_port)
  if [[ $scheme == http ]]; then flags=(--insecure-http); else curl_tls=(--cacert "$work/$scheme/tls/ca.crt"); fi
  "$(find_bin mariadb mysql)" --no-defaults --socket="$work/mariadb.sock" -uroot -e "CREATE DATABASE bench_$scheme"
  "$root/target/release/center-cloud" serve --listen "127.0.0.1:$port" --link-listen "127.0.0.1:$(free_port)" \
    --data-dir "$work/$scheme" --database-url "$mysql_url/bench_$scheme" --db-max-connections 64 \
    --admin-password bench-wrk-pw "${flags[@]}" >"$work/center-$scheme.log" 2>&1 &
  center_pid=$!
  local base="$scheme://127.0.0.1:$port"
  for _ in $(seq 1 100); do
    if curl -fsS "${curl_tls[@]}" "$base/readyz" >/dev/null 2>&1; then break; fi
    sleep 0.2
  done
  TOKEN=$(curl -fsS "${curl_tls[@]}" -H 'content-type: application/json' \
    -d '{"username":"admin","password":"bench-wrk-pw"}' "$base/api/v1/auth/login" | jq -r .data.token)
  export TOKEN
  say "$scheme: POST /api/v1/devices, ${seconds} s"
  wrk -t2 -c64 -d"${seconds}s" --latency -s "$work/create.lua" "$base" | grep -E 'Requests/sec|Non-2xx|50%|99%'
  local id
  id=$(curl -fsS "${curl_tls[@]}" -H "authorization: Bearer $TOKEN" "$base/api/v1/devices?per_page=1" | jq -r '.data.items[0].id')
  say "$scheme: GET /api/v1/devices/{id}, ${seconds} s"
  wrk -t2 -c64 -d"${seconds}s" --latency -H "Authorization: Bearer $TOKEN" "$base/api/v1/devices/$id" |
    grep -E 'Requests/sec|Non-2xx|50%|99%'
  kill "$center_pid"
  wait "$center_pid" 2>/dev/null || true
  center_pid=""
}

say "one center on MariaDB, wrk -t2 -c64 (targets, issue 11: create >= 3000 req/s, get >= 25000 req/s)"
run http
run https
