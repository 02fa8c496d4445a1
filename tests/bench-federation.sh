#!/usr/bin/env bash
# Federation benchmarks (docs/design.md §8), release build, loopback only. Prints:
#
#   1. change propagation latency center -> edge and edge -> center, p50/p99, on SQLite
#      and on a throwaway MariaDB, and the snapshot bootstrap time of a new edge whose
#      center holds 100,000 devices (edge-cloud/benches/federation.rs, both backends);
#   2. with 10,000 simulated devices connected to an edge joined to a center, all real
#      processes: the command round trip operator -> center -> edge -> device ->
#      operator (get_status, wait: true, p50/p99), and the time for one group command
#      to reach all 10,000 devices and come back done.
#
# Settings (environment):
#   BENCH_DEVICES     devices for part 2                [10000]
#   BENCH_COMMANDS    measured round trips              [300]
#   BENCH_SAMPLES     propagation writes each way       [300]
#   BENCH_BOOTSTRAP   devices of the bootstrap          [100000]
#   BENCH_PARTS       which parts to run                ["1 2"]
#
# Every wait is bounded; every process it starts is stopped by its PID on exit.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

case ${1:-} in
  -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
  "") ;;
  *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
esac

devices=${BENCH_DEVICES:-10000}
commands=${BENCH_COMMANDS:-300}
read -r -a parts <<<"${BENCH_PARTS:-1 2}"
password=bench-password
work=$(mktemp -d /tmp/fleet-federation-bench.XXXXXX)
pids=()

say() { printf '==> %s\n' "$*"; }
gone() { ! kill -0 "$1" 2>/dev/null; }
wait_for() { # seconds, command...: runs it every 0.2 s until it succeeds
  local until=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < until)) || return 1
    sleep 0.2
  done
}
stop_pids() {
  local p
  for p in "$@"; do kill "$p" 2>/dev/null || true; done
  for p in "$@"; do
    wait_for 30 gone "$p" || kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
}
# shellcheck source=tests/mariadb.sh
source "$root/tests/mariadb.sh"
mysql_url=""
cleanup() {
  stop_pids "${pids[@]}"
  stop_mariadb
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

want_part() { [[ " ${parts[*]} " == *" $1 "* ]]; }

# --- part 1: propagation and bootstrap, in-process, both backends ----------------------

if want_part 1; then
  install_missing
  say "building the federation benchmark"
  cargo bench -p edge-cloud --bench federation --no-run --quiet 2>/dev/null
  say "propagation and bootstrap on SQLite"
  cargo bench -p edge-cloud --bench federation --quiet 2>"$work/bench-sqlite.err" ||
    { cat "$work/bench-sqlite.err" >&2; exit 1; }
  start_mariadb
  say "propagation and bootstrap on MariaDB"
  BENCH_MYSQL_URL=$mysql_url cargo bench -p edge-cloud --bench federation --quiet \
    2>"$work/bench-mariadb.err" || { cat "$work/bench-mariadb.err" >&2; exit 1; }
  stop_mariadb
fi

want_part 2 || exit 0

# --- part 2: 10,000 devices through the center, real processes -------------------------

if ! command -v jq >/dev/null || ! command -v curl >/dev/null; then install_missing; fi
cargo build --release --quiet -p center-cloud -p edge-cloud -p device-agent
rtt_bin=$(cargo build --release --quiet -p edge-cloud --bench command_rtt --message-format=json |
  grep -o '"executable":"[^"]*command_rtt[^"]*"' | tail -1 | cut -d'"' -f4)
[[ -x $rtt_bin ]] || { echo "could not find the command_rtt bench binary" >&2; exit 1; }
bin="$root/target/release"
ulimit -n "$(ulimit -Hn)"

center_port=$(free_port)
link_port=$(free_port)
edge_port=$(free_port)
device_port=$(free_port)
center="https://127.0.0.1:$center_port"
center_ca="$work/center/tls/ca.crt"
edge="https://127.0.0.1:$edge_port"
edge_ca="$work/edge/tls/ca.crt"

CENTER_ADMIN_PASSWORD=$password "$bin/center-cloud" serve --listen "127.0.0.1:$center_port" \
  --link-listen "127.0.0.1:$link_port" --data-dir "$work/center" --log warn \
  >"$work/center.log" 2>&1 &
pids+=("$!")
ready() { curl -fsS --max-time 2 --cacert "$2" "$1/readyz" >/dev/null 2>&1; }
wait_for 60 ready "$center" "$center_ca" || { tail "$work/center.log" >&2; exit 1; }
token=$(curl -fsS --cacert "$center_ca" "$center/api/v1/auth/login" -H 'content-type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$password\"}" | jq -r .data.token)
capi() { # method path [body]
  curl -fsS --max-time 120 --cacert "$center_ca" -X "$1" "$center$2" -H "authorization: Bearer $token" \
    -H 'content-type: application/json' ${3:+-d "$3"}
}
reg=$(capi POST /api/v1/edges '{"name":"bench-edge","site":"bench"}')
EDGE_ADMIN_PASSWORD=$password EDGE_EDGE_SECRET=$(jq -r .data.secret <<<"$reg") \
  "$bin/edge-cloud" serve --listen "127.0.0.1:$edge_port" --device-listen "127.0.0.1:$device_port" \
  --data-dir "$work/edge" --worker-id "$(jq -r .data.worker_id <<<"$reg")" \
  --center-url "wss://127.0.0.1:$link_port/link" --edge-id "$(jq -r .data.id <<<"$reg")" \
  --center-ca "$center_ca" --max-unauthenticated-per-source 100000 \
  --log warn >"$work/edge.log" 2>&1 &
pids+=("$!")
wait_for 60 ready "$edge" "$edge_ca" || { tail "$work/edge.log" >&2; exit 1; }

say "provisioning $devices devices at the edge's site API (they reach the center by sync)"
started=$SECONDS
AGENT_SITE_PASSWORD=$password "$bin/device-agent" provision --site "$edge" --ca "$edge_ca" \
  --count "$devices" --prefix bench --out "$work/devices.csv" >/dev/null 2>"$work/provision.log"
at_center() { capi GET "/api/v1/devices?page_size=1" | jq -r '.data.total // 0'; }
has_all() { (($(at_center) >= devices)); }
wait_for $((120 + devices / 100)) has_all || { echo "the center has only $(at_center) devices" >&2; exit 1; }
echo "  $devices devices registered and at the center after $((SECONDS - started)) s"

say "connecting $devices simulated devices"
"$bin/device-agent" simulate --credentials "$work/devices.csv" --edge "wss://127.0.0.1:$device_port/devices" \
  --ca "$edge_ca" --report-interval-s 60 2>"$work/sim.log" &
pids+=("$!")
sessions() { curl -fsS --cacert "$edge_ca" "$edge/metrics" 2>/dev/null | awk '$1 == "device_sessions" { print $2 }'; }
connected() { (($(sessions || echo 0) >= devices)); }
started=$SECONDS
wait_for $((60 + devices / 200)) connected || { echo "only $(sessions) sessions" >&2; exit 1; }
echo "  all connected after $((SECONDS - started)) s"

say "command round trip operator -> center -> edge -> device -> operator"
BENCH_SITE_PASSWORD=$password "$rtt_bin" --site "$center" --ca "$center_ca" \
  --credentials "$work/devices.csv" --devices "$devices" --commands "$commands"

say "one group command to all $devices devices"
group=$(capi POST /api/v1/groups '{"name":"everyone"}' | jq -r .data.id)
tail -n +2 "$work/devices.csv" | cut -d, -f1 | jq -R . | jq -s '{device_ids: .}' >"$work/members.json"
capi POST "/api/v1/groups/$group/devices" "@$work/members.json" >/dev/null
started=$(date +%s.%N)
batch=$(capi POST "/api/v1/groups/$group/commands" '{"name":"get_status","timeout_s":300}' | jq -r .data.batch_id)
accepted=$(date +%s.%N)
done_count() { capi GET "/api/v1/batches/$batch" | jq -r '.data.done'; }
all_done() { (($(done_count) >= devices)); }
wait_for 600 all_done || { echo "only $(done_count) of $devices done" >&2; exit 1; }
finished=$(date +%s.%N)
awk -v s="$started" -v a="$accepted" -v f="$finished" -v n="$devices" 'BEGIN {
  printf "| group command | %d devices | accepted in %.2f s | all done in %.2f s | %.0f devices/s |\n",
    n, a - s, f - s, n / (f - s) }'
