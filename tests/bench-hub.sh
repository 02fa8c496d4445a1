#!/usr/bin/env bash
# Device hub benchmark: one release edge holding N simulated device sessions over TLS
# (N = 5,000, 10,000 and as many as the open-file limit allows). Prints, per N, the
# time for all devices to log in, the edge's resident memory per session, and its CPU
# use with every session idle but heartbeating. Bounded: each step runs a fixed time
# and every process it starts is stopped at the end.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
work=$(mktemp -d /tmp/fleet-hub-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --release --quiet -p edge-cloud -p device-agent
edge_bin="$root/target/release/edge-cloud"
agent_bin="$root/target/release/device-agent"

limit=$(ulimit -Hn)
ulimit -n "$limit"
# Each session costs the edge one descriptor; keep a margin for its database and API.
max=$(( limit - 200 ))
sizes=(5000 10000 "$max")
per_sim=8000

EDGE_ADMIN_PASSWORD=bench-password "$edge_bin" serve \
  --device-listen 127.0.0.1:29444 --listen 127.0.0.1:29443 --data-dir "$work/edge" \
  --log warn >"$work/edge.log" 2>&1 &
edge_pid=$!
pids+=("$edge_pid")
ca="$work/edge/tls/ca.crt"
for _ in $(seq 1 100); do [[ -f "$ca" ]] && curl -fsS --cacert "$ca" https://127.0.0.1:29443/readyz >/dev/null 2>&1 && break; sleep 0.1; done

echo "provisioning $max devices"
AGENT_SITE_PASSWORD=bench-password "$agent_bin" provision --site https://127.0.0.1:29443 \
  --ca "$ca" --count "$max" --out "$work/devices.csv" 2>/dev/null

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$edge_pid/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$edge_pid/stat"; }
sessions() { curl -fsS --cacert "$ca" https://127.0.0.1:29443/metrics | awk '$1 == "device_sessions" {print $2}'; }

printf '%-8s %-12s %-18s %-16s\n' sessions "login (s)" "RSS/session (KiB)" "CPU (% of a core)"
for n in "${sizes[@]}"; do
  base=$(rss_kib)
  sims=()
  started=$(date +%s.%N)
  offset=0
  while (( offset < n )); do
    take=$(( n - offset < per_sim ? n - offset : per_sim ))
    { echo "device_id,secret"; tail -n +2 "$work/devices.csv" | sed -n "$((offset + 1)),$((offset + take))p"; } >"$work/part-$offset.csv"
    "$agent_bin" simulate --credentials "$work/part-$offset.csv" --edge wss://localhost:29444/devices \
      --ca "$ca" --report-interval-s 60 2>/dev/null &
    sims+=("$!")
    pids+=("$!")
    offset=$(( offset + take ))
  done
  for _ in $(seq 1 600); do
    [[ "$(sessions)" == "$n" ]] && break
    sleep 0.1
  done
  login=$(echo "$(date +%s.%N) - $started" | bc)
  got=$(sessions)
  sleep 5
  t0=$(cpu_ticks); sleep 10; t1=$(cpu_ticks)
  hz=$(getconf CLK_TCK)
  cpu=$(echo "scale=1; ($t1 - $t0) * 100 / ($hz * 10)" | bc)
  per=$(echo "scale=2; ($(rss_kib) - $base) / $got" | bc)
  printf '%-8s %-12.2f %-18s %-16s\n' "$got" "$login" "$per" "$cpu"
  for p in "${sims[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${sims[@]}"; do wait "$p" 2>/dev/null || true; done
  for _ in $(seq 1 300); do [[ "$(sessions)" == "0" ]] && break; sleep 0.1; done
done
echo "open-file limit of this process: $limit (the top size is bounded by it)"
