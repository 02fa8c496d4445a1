#!/usr/bin/env bash
# REST throughput as an outside client sees it: one release center on a throwaway
# MariaDB, driven by wrk (64 connections, 2 threads) over plain HTTP (--insecure-http,
# as the seed service is measured) and over HTTPS. Creates first (each with its own
# serial number), then reads of one device by id. Then the same over plain HTTP with
# two center replicas: on one MariaDB, and on a three-node Galera cluster with each
# replica on its own node (one wrk per replica, 32 connections each, figures summed).
# Prints figures; asserts nothing.
#   BENCH_SECONDS=N   length of each run (default 10)
#   BENCH_REPLICAS=0  skip the two-replica runs
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
work=$(mktemp -d /tmp/fleet-wrk.XXXXXX)
center_pids=()
seconds=${BENCH_SECONDS:-10}
say() { printf '==> %s\n' "$*"; }
# shellcheck source=tests/mariadb.sh
source "$root/tests/mariadb.sh"
# shellcheck source=tests/galera.sh
source "$root/tests/galera.sh"
stop_centers() {
  local pid
  for pid in "${center_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${center_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  center_pids=()
}
cleanup() {
  stop_centers
  stop_mariadb
  stop_galera
  rm -rf "$work"
}
trap cleanup EXIT
install_missing
command -v wrk >/dev/null || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
# The same package set as the other benches, so none rebuilds what another built.
cargo build --release --quiet -p center-cloud -p edge-cloud -p device-agent
start_mariadb

# Each wrk thread numbers its own creates, and each wrk process has its own PREFIX, so
# every serial number is new.
cat >"$work/create.lua" <<'EOF'
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function init(args)
  n = 0
  token = os.getenv("TOKEN")
  prefix = os.getenv("PREFIX") or ""
end
function request()
  n = n + 1
  local body = string.format('{"name":"w%d-%d","type":"gateway","hardware":{"model":"Bench","sn":"WRK-%s%d-%d"},'
    .. '"software":{"version":"1.0.0","last_update":"2026-01-01 10:00:00"},"status":"active"}', tid, n, prefix, tid, n)
  return wrk.format("POST", "/api/v1/devices",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}, body)
end
EOF

# start_center NAME SCHEME DATABASE_URL: a release center over that database, its
# base URL in $base once it answers.
start_center() {
  local name=$1 scheme=$2 url=$3 port flags=()
  port=$(free_port)
  if [[ $scheme == http ]]; then flags=(--insecure-http); fi
  "$root/target/release/center-cloud" serve --listen "127.0.0.1:$port" --link-listen "127.0.0.1:$(free_port)" \
    --data-dir "$work/$name" --database-url "$url" --db-max-connections 64 \
    --admin-password bench-wrk-pw "${flags[@]}" >"$work/center-$name.log" 2>&1 &
  center_pids+=("$!")
  base="$scheme://127.0.0.1:$port"
  local tls=()
  if [[ $scheme == https ]]; then tls=(--cacert "$work/$name/tls/ca.crt"); fi
  for _ in $(seq 1 100); do
    if curl -fsS "${tls[@]}" "$base/readyz" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "center $name did not come up" >&2
  tail "$work/center-$name.log" >&2
  return 1
}

# login BASE [curl TLS flags]: exports TOKEN.
login() {
  local base=$1
  shift
  TOKEN=$(curl -fsS "$@" -H 'content-type: application/json' \
    -d '{"username":"admin","password":"bench-wrk-pw"}' "$base/api/v1/auth/login" | jq -r .data.token)
  export TOKEN
}

# run SCHEME: starts a center with or without TLS over a fresh database, creates, reads.
run() {
  local scheme=$1 curl_tls=()
  if [[ $scheme == https ]]; then curl_tls=(--cacert "$work/$scheme/tls/ca.crt"); fi
  "$(find_bin mariadb mysql)" --no-defaults --socket="$work/mariadb.sock" -uroot -e "CREATE DATABASE bench_$scheme"
  start_center "$scheme" "$scheme" "$mysql_url/bench_$scheme"
  login "$base" "${curl_tls[@]}"
  say "$scheme: POST /api/v1/devices, ${seconds} s"
  wrk -t2 -c64 -d"${seconds}s" --latency -s "$work/create.lua" "$base" | grep -E 'Requests/sec|Non-2xx|50%|99%'
  local id
  id=$(curl -fsS "${curl_tls[@]}" -H "authorization: Bearer $TOKEN" "$base/api/v1/devices?per_page=1" | jq -r '.data.items[0].id')
  say "$scheme: GET /api/v1/devices/{id}, ${seconds} s"
  wrk -t2 -c64 -d"${seconds}s" --latency -H "Authorization: Bearer $TOKEN" "$base/api/v1/devices/$id" |
    grep -E 'Requests/sec|Non-2xx|50%|99%'
  stop_centers
}

# both LABEL URL_1 URL_2: two replicas over plain HTTP, one over each database URL,
# each driven by its own wrk at once; prints the summed rates.
both() {
  local label=$1 bases=() first
  start_center "$label-1" http "$2"
  bases+=("$base")
  start_center "$label-2" http "$3"
  bases+=("$base")
  login "${bases[0]}"
  say "$label, two replicas: POST /api/v1/devices, ${seconds} s"
  PREFIX=a wrk -t1 -c32 -d"${seconds}s" -s "$work/create.lua" "${bases[0]}" >"$work/w1" &
  first=$!
  PREFIX=b wrk -t1 -c32 -d"${seconds}s" -s "$work/create.lua" "${bases[1]}" >"$work/w2"
  wait "$first"
  rate "$work/w1" "$work/w2"
  local id
  id=$(curl -fsS -H "authorization: Bearer $TOKEN" "${bases[0]}/api/v1/devices?per_page=1" | jq -r '.data.items[0].id')
  say "$label, two replicas: GET /api/v1/devices/{id}, ${seconds} s"
  wrk -t1 -c32 -d"${seconds}s" -H "Authorization: Bearer $TOKEN" "${bases[0]}/api/v1/devices/$id" >"$work/w1" &
  first=$!
  wrk -t1 -c32 -d"${seconds}s" -H "Authorization: Bearer $TOKEN" "${bases[1]}/api/v1/devices/$id" >"$work/w2"
  wait "$first"
  rate "$work/w1" "$work/w2"
  stop_centers
}

# rate FILE...: the summed Requests/sec of wrk outputs, and their non-2xx answers.
rate() {
  awk '/Requests\/sec/ { sum += $2 } /Non-2xx/ { bad += $NF }
    END { printf "    Requests/sec (sum of both replicas): %.2f  non-2xx: %d\n", sum, bad }' "$@"
}

say "one center on MariaDB, wrk -t2 -c64 (targets, issue 11: create >= 3000 req/s, get >= 25000 req/s)"
run http
run https
[[ ${BENCH_REPLICAS:-1} == 0 ]] && exit 0
"$(find_bin mariadb mysql)" --no-defaults --socket="$work/mariadb.sock" -uroot -e "CREATE DATABASE bench_two"
both "one MariaDB" "$mysql_url/bench_two" "$mysql_url/bench_two"
stop_mariadb
install_galera
start_galera
galera_sql 1 "CREATE DATABASE bench_galera"
both "Galera (replica 1 on node 1, replica 2 on node 2)" "${galera_urls[0]}/bench_galera" "${galera_urls[1]}/bench_galera"
