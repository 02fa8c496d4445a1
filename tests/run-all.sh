#!/usr/bin/env bash
# The one test command: installs what is missing (MariaDB, Galera, jq), starts a
# throwaway MariaDB on loopback, runs the workspace tests on SQLite and on MariaDB,
# then the multi-writer tests on a three-node Galera cluster (two center replicas
# writing through two nodes), runs the shell suites against a standalone edge and
# against a whole federation on MariaDB (twice, with a reset between), then stops
# everything.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
work=$(mktemp -d /tmp/fleet-tests.XXXXXX)
federation_pid=""
edge_pid=""

say() { printf '==> %s\n' "$*"; }

cleanup() {
  # local-federation stops its center, edges and simulators on SIGTERM.
  if [[ -n "$federation_pid" ]]; then kill "$federation_pid" 2>/dev/null || true; wait "$federation_pid" 2>/dev/null || true; fi
  if [[ -n "$edge_pid" ]]; then kill "$edge_pid" 2>/dev/null || true; wait "$edge_pid" 2>/dev/null || true; fi
  stop_mariadb
  stop_galera
  rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=tests/mariadb.sh
source "$root/tests/mariadb.sh"
# shellcheck source=tests/galera.sh
source "$root/tests/galera.sh"

run_tests() {
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@"
  else
    cargo test --workspace --no-fail-fast
  fi
}

install_missing
install_galera
say "checking format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo build --workspace --all-targets --quiet

say "deployment files (compose, Kubernetes, systemd, shell scripts, workflow)"
bash "$root/tests/deploy-check.sh"

start_mariadb

say "workspace tests on SQLite"
run_tests

say "database tests on MariaDB"
TEST_MYSQL_URL="$mysql_url" run_tests -E 'kind(test)'

say "multi-writer tests on a three-node Galera cluster"
start_galera
# Two center replicas write through nodes 1 and 2; the process test kills the second
# replica and node 2 halfway (SIGKILL) and the federation converges on the rest.
TEST_MYSQL_URL="${galera_urls[0]}" TEST_MYSQL_URL_2="${galera_urls[1]}" \
  TEST_GALERA_KILL_PID="${galera_pids[1]}" \
  run_tests -E 'test(/^replicas::/) | test(a_federation_of_processes)'
stop_galera

say "shell suite against an edge on MariaDB, with a real agent"
edge_port=$(free_port)
device_port=$(free_port)
EDGE_ADMIN_PASSWORD=shell-edge-pw \
  "$root/target/debug/edge-cloud" serve --listen "127.0.0.1:$edge_port" \
  --device-listen "127.0.0.1:$device_port" --data-dir "$work/edge" \
  --database-url "$mysql_url/edge_shell" >"$work/edge.log" 2>&1 &
edge_pid=$!
for _ in $(seq 1 100); do
  if curl -fsS --cacert "$work/edge/tls/ca.crt" "https://127.0.0.1:$edge_port/readyz" >/dev/null 2>&1; then break; fi
  sleep 0.2
done
EDGE_URL="https://127.0.0.1:$edge_port" EDGE_CA="$work/edge/tls/ca.crt" EDGE_ADMIN_PASSWORD=shell-edge-pw \
  EDGE_DEVICE_URL="wss://localhost:$device_port/devices" AGENT_BIN="$root/target/debug/device-agent" \
  bash tests/shell/edge.sh >"$work/shell-edge.log" || { cat "$work/shell-edge.log"; exit 1; }
tail -n 1 "$work/shell-edge.log"

say "shell suites against a federation on MariaDB: a center, two edges, simulated devices"
"$root/target/debug/local-federation" --bin-dir "$root/target/debug" --data-dir "$work/federation" \
  --port-base 0 --devices 10 --database-url "$mysql_url/fed" >"$work/federation.log" 2>&1 &
federation_pid=$!
for _ in $(seq 1 600); do
  if [[ -e "$work/federation/endpoints.json" ]] || ! kill -0 "$federation_pid" 2>/dev/null; then break; fi
  sleep 0.2
done
[[ -e "$work/federation/endpoints.json" ]] || { cat "$work/federation.log"; exit 1; }
export FEDERATION_DIR="$work/federation"
endpoints="$FEDERATION_DIR/endpoints.json"
admin_password=$(jq -r .admin_password "$FEDERATION_DIR/state.json")

# shell_suites LABEL: the center, site and federation suites against the federation.
shell_suites() {
  local log="$work/shell-$1.log"
  CENTER_URL=$(jq -r .center.api_url "$endpoints") CENTER_CA=$(jq -r .center.ca "$endpoints") \
    CENTER_ADMIN_PASSWORD="$admin_password" bash tests/shell/center.sh >"$log" 2>&1 ||
    { cat "$log"; return 1; }
  tail -n 1 "$log" | sed 's/^/center:     /'
  EDGE_URL=$(jq -r '.edges[0].api_url' "$endpoints") EDGE_CA=$(jq -r '.edges[0].ca' "$endpoints") \
    EDGE_ID=$(jq -r '.edges[0].id' "$endpoints") EDGE_DEVICE_URL=$(jq -r '.edges[0].devices_url' "$endpoints") \
    EDGE_ADMIN_PASSWORD="$admin_password" AGENT_BIN="$root/target/debug/device-agent" \
    bash tests/shell/edge.sh >"$log" 2>&1 || { cat "$log"; return 1; }
  tail -n 1 "$log" | sed 's/^/edge-1:     /'
  bash tests/shell/federation.sh >"$log" 2>&1 || { cat "$log"; return 1; }
  tail -n 1 "$log" | sed 's/^/federation: /'
}
# Suites, reset, suites again: proves they are repeatable and reset restores the start.
shell_suites first
bash tests/shell/reset.sh | tail -n 1
shell_suites second
