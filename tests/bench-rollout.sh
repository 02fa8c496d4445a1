#!/usr/bin/env bash
# Rollout benchmark (issue: software rollouts), release build, real processes on
# loopback: a center, two edges joined to it (each fetching artifacts from the center's
# API), and BENCH_DEVICES simulated devices split over the two edges (one simulator
# process per edge). One artifact of BENCH_ARTIFACT_MIB is rolled out to all of them in
# waves; the simulated devices download it from their edge, check its signature and
# digest, and fail BENCH_FAIL_PCT percent of installs. Prints:
#
#   - when each wave opened and how long it took to finish;
#   - bytes each edge fetched from the center (the artifact's size once per edge, not
#     once per device) and bytes each edge served to its devices.
#
# Settings (environment):
#   BENCH_DEVICES       devices, half per edge              [10000]
#   BENCH_ARTIFACT_MIB  artifact size in MiB                 [10]
#   BENCH_WAVES         wave sizes, JSON                     ["1%","10%","100%"]
#   BENCH_IN_FLIGHT     max_in_flight_per_edge               [500]
#   BENCH_FAIL_PCT      share of simulated installs failing  [2]
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
mib=${BENCH_ARTIFACT_MIB:-10}
waves=${BENCH_WAVES:-'["1%","10%","100%"]'}
in_flight=${BENCH_IN_FLIGHT:-500}
fail_pct=${BENCH_FAIL_PCT:-2}
password=bench-password
work=$(mktemp -d /tmp/fleet-rollout-bench.XXXXXX)
pids=()

say() { printf '==> %s\n' "$*"; }
gone() { ! kill -0 "$1" 2>/dev/null; }
wait_for() { # seconds, command...: runs it every 0.5 s until it succeeds
  local until=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < until)) || return 1
    sleep 0.5
  done
}
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    wait_for 30 gone "$p" || kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# shellcheck source=tests/mariadb.sh
source "$root/tests/mariadb.sh" # free_port, install_missing

if ! command -v jq >/dev/null || ! command -v curl >/dev/null; then install_missing; fi
cargo build --release --quiet -p center-cloud -p edge-cloud -p device-agent
bin="$root/target/release"
ulimit -n "$(ulimit -Hn)"

center_port=$(free_port)
link_port=$(free_port)
center="https://127.0.0.1:$center_port"
center_ca="$work/center/tls/ca.crt"
CENTER_ADMIN_PASSWORD=$password "$bin/center-cloud" serve --listen "127.0.0.1:$center_port" \
  --link-listen "127.0.0.1:$link_port" --data-dir "$work/center" --log warn \
  >"$work/center.log" 2>&1 &
pids+=("$!")
ready() { curl -fsS --max-time 2 --cacert "$2" "$1/readyz" >/dev/null 2>&1; }
wait_for 60 ready "$center" "$center_ca" || { tail "$work/center.log" >&2; exit 1; }
token=$(curl -fsS --cacert "$center_ca" "$center/api/v1/auth/login" -H 'content-type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$password\"}" | jq -r .data.token)
capi() { # method path [curl args...]
  local method=$1 path=$2
  shift 2
  curl -fsS --max-time 300 --cacert "$center_ca" -X "$method" "$center$path" \
    -H "authorization: Bearer $token" "$@"
}
cjson() { capi "$1" "$2" -H 'content-type: application/json' ${3:+-d "$3"}; }

per_edge=$((devices / 2))
edge_urls=()
for n in 1 2; do
  reg=$(cjson POST /api/v1/edges "{\"name\":\"bench-edge-$n\",\"site\":\"bench-$n\"}")
  port=$(free_port)
  dport=$(free_port)
  EDGE_ADMIN_PASSWORD=$password EDGE_EDGE_SECRET=$(jq -r .data.secret <<<"$reg") \
    "$bin/edge-cloud" serve --listen "127.0.0.1:$port" --device-listen "127.0.0.1:$dport" \
    --data-dir "$work/edge-$n" --worker-id "$(jq -r .data.worker_id <<<"$reg")" \
    --center-url "wss://127.0.0.1:$link_port/link" --center-api-url "$center" \
    --edge-id "$(jq -r .data.id <<<"$reg")" --center-ca "$center_ca" \
    --max-unauthenticated-per-source 100000 --log warn >"$work/edge-$n.log" 2>&1 &
  pids+=("$!")
  edge="https://127.0.0.1:$port"
  edge_urls+=("$edge")
  wait_for 60 ready "$edge" "$work/edge-$n/tls/ca.crt" || { tail "$work/edge-$n.log" >&2; exit 1; }
  say "provisioning $per_edge devices at edge $n"
  AGENT_SITE_PASSWORD=$password "$bin/device-agent" provision --site "$edge" \
    --ca "$work/edge-$n/tls/ca.crt" --count "$per_edge" --prefix "bench$n" \
    --out "$work/devices-$n.csv" >/dev/null 2>"$work/provision-$n.log"
  printf '%s\n' "$dport" >"$work/dport-$n"
done
at_center() { cjson GET "/api/v1/devices?per_page=1" | jq -r '.data.total // 0'; }
has_all() { (($(at_center) >= per_edge * 2)); }
wait_for $((120 + devices / 100)) has_all || { echo "the center has only $(at_center) devices" >&2; exit 1; }

key=$(cjson GET /api/v1/artifacts/signing-key | jq -r .data.public_key)
for n in 1 2; do
  "$bin/device-agent" simulate --credentials "$work/devices-$n.csv" \
    --edge "wss://127.0.0.1:$(cat "$work/dport-$n")/devices" --ca "$work/edge-$n/tls/ca.crt" \
    --report-interval-s 60 --install-fail-pct "$fail_pct" --update-public-key "$key" \
    2>"$work/sim-$n.log" &
  pids+=("$!")
done
sessions() { curl -fsS --cacert "$work/edge-$1/tls/ca.crt" "${edge_urls[$1 - 1]}/metrics" 2>/dev/null |
  awk -v m="$2" '$1 == m { print $2 }'; }
connected() { (($(sessions 1 device_sessions || echo 0) + $(sessions 2 device_sessions || echo 0) >= per_edge * 2)); }
wait_for $((60 + devices / 100)) connected || { echo "not every device connected" >&2; exit 1; }
say "all $((per_edge * 2)) devices connected"

head -c $((mib * 1024 * 1024)) /dev/urandom >"$work/artifact.bin"
artifact=$(capi POST "/api/v1/artifacts?name=bench-fw&version=2.0.$RANDOM" \
  -H 'content-type: application/octet-stream' --data-binary "@$work/artifact.bin" | jq -r .data.id)
group=$(cjson POST /api/v1/groups '{"name":"everyone"}' | jq -r .data.id)
for n in 1 2; do
  tail -n +2 "$work/devices-$n.csv" | cut -d, -f1 | jq -R . | jq -s '{device_ids: .}' >"$work/members.json"
  capi POST "/api/v1/groups/$group/devices" -H 'content-type: application/json' \
    --data-binary "@$work/members.json" >/dev/null
done

say "rolling $mib MiB out to $((per_edge * 2)) devices in waves $waves, $in_flight in flight per edge, $fail_pct% failing"
body=$(jq -cn --arg a "$artifact" --arg g "$group" --argjson w "$waves" --argjson f "$in_flight" \
  '{name: "bench", artifact_id: $a, target: {group_id: $g}, waves: $w,
    success_threshold_pct: 90, error_threshold_pct: 10, device_timeout_s: 1800,
    max_in_flight_per_edge: $f}')
started=$(date +%s.%N)
rollout=$(cjson POST /api/v1/rollouts "$body" | jq -r .data.id)
echo "  made in $(awk -v s="$started" -v n="$(date +%s.%N)" 'BEGIN { printf "%.2f", n - s }') s"
printf '| wave | devices | opened at | finished at | took | succeeded | failed |\n|---|---|---|---|---|---|---|\n'
declare -A opened finished
deadline=$((SECONDS + 3600))
while ((SECONDS < deadline)); do
  view=$(cjson GET "/api/v1/rollouts/$rollout")
  now=$(date +%s.%N)
  state=$(jq -r .data.state <<<"$view")
  wave=$(jq -r .data.wave <<<"$view")
  [[ -n ${opened[$wave]:-} ]] || opened[$wave]=$now
  while read -r w total ended ok bad; do
    if [[ -z ${finished[$w]:-} ]] && ((total > 0 && ended >= total)); then
      finished[$w]=$now
      awk -v w="$w" -v t="$total" -v o="${opened[$w]:-$started}" -v f="$now" -v s="$started" \
        -v ok="$ok" -v bad="$bad" 'BEGIN { printf "| %d | %d | %.1f s | %.1f s | %.1f s | %d | %d |\n",
          w, t, o - s, f - s, f - o, ok, bad }'
    fi
  done < <(jq -r '.data.per_wave[] | [.wave, .counts.total,
      (.counts.succeeded + .counts.failed + .counts.timed_out), .counts.succeeded,
      (.counts.failed + .counts.timed_out)] | @tsv' <<<"$view")
  case $state in
    completed | aborted) break ;;
    paused) echo "  paused: $(jq -r .data.reason <<<"$view")"; break ;;
  esac
  sleep 0.5
done
echo "  rollout $state after $(awk -v s="$started" -v n="$(date +%s.%N)" 'BEGIN { printf "%.1f", n - s }') s: $(jq -c '.data.counts' <<<"$view")"
size=$(stat -c %s "$work/artifact.bin")
printf '| edge | fetched from the center | served to devices | devices |\n|---|---|---|---|\n'
for n in 1 2; do
  fetched=$(sessions "$n" artifact_fetched_bytes_total)
  served=$(sessions "$n" artifact_served_bytes_total)
  printf '| %d | %s bytes (%s x the artifact) | %s bytes (%s x the artifact) | %d |\n' "$n" \
    "$fetched" "$(awk -v a="$fetched" -v s="$size" 'BEGIN { printf "%.2f", a / s }')" \
    "$served" "$(awk -v a="$served" -v s="$size" 'BEGIN { printf "%.1f", a / s }')" "$per_edge"
done
