#!/usr/bin/env bash
# The one test command: installs what is missing (MariaDB, jq), starts a throwaway
# MariaDB on loopback, runs the workspace tests on SQLite and on MariaDB, starts a
# center on MariaDB and runs the shell suite against it, then stops everything.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
work=$(mktemp -d /tmp/fleet-tests.XXXXXX)
db_pid=""
center_pid=""

say() { printf '==> %s\n' "$*"; }

cleanup() {
  if [[ -n "$center_pid" ]]; then kill "$center_pid" 2>/dev/null || true; wait "$center_pid" 2>/dev/null || true; fi
  if [[ -n "$db_pid" ]]; then kill "$db_pid" 2>/dev/null || true; wait "$db_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

find_bin() {
  local name
  for name in "$@"; do
    for dir in /usr/sbin /usr/bin /usr/local/sbin /usr/local/bin; do
      if [[ -x "$dir/$name" ]]; then echo "$dir/$name"; return 0; fi
    done
  done
  return 1
}

install_missing() {
  local need=()
  find_bin mariadbd mysqld >/dev/null || need+=(mariadb-server)
  find_bin mariadb mysql >/dev/null || need+=(mariadb-client)
  command -v jq >/dev/null || need+=(jq)
  command -v curl >/dev/null || need+=(curl)
  if ((${#need[@]})); then
    say "installing ${need[*]}"
    as_root apt-get update -qq
    # The package's own service must not start: tests run their own server.
    as_root env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start_mariadb() {
  local server install client
  server=$(find_bin mariadbd mysqld)
  install=$(find_bin mariadb-install-db mysql_install_db)
  client=$(find_bin mariadb mysql)
  db_port=$(free_port)
  local data="$work/mariadb"
  mkdir -p "$data"
  say "starting a throwaway MariaDB on 127.0.0.1:$db_port"
  "$install" --no-defaults --datadir="$data" --user="$(id -un)" \
    --auth-root-authentication-method=normal --skip-test-db >"$work/mariadb-install.log" 2>&1
  "$server" --no-defaults --datadir="$data" --user="$(id -un)" \
    --socket="$work/mariadb.sock" --pid-file="$work/mariadb.pid" \
    --port="$db_port" --bind-address=127.0.0.1 \
    --max-connections=2000 --innodb-buffer-pool-size=256M \
    --innodb-flush-log-at-trx-commit=2 --log-error="$work/mariadb.err" &
  db_pid=$!
  for _ in $(seq 1 100); do
    if "$client" --no-defaults --socket="$work/mariadb.sock" -uroot -e 'SELECT 1' >/dev/null 2>&1; then break; fi
    sleep 0.2
  done
  "$client" --no-defaults --socket="$work/mariadb.sock" -uroot -e "
    CREATE USER 'fleet'@'127.0.0.1' IDENTIFIED BY 'fleet';
    GRANT ALL PRIVILEGES ON *.* TO 'fleet'@'127.0.0.1';
    CREATE DATABASE center_shell;"
  mysql_url="mysql://fleet:fleet@127.0.0.1:$db_port"
}

run_tests() {
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@"
  else
    cargo test --workspace --no-fail-fast
  fi
}

install_missing
say "checking format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo build --workspace --all-targets --quiet

start_mariadb

say "workspace tests on SQLite"
run_tests

say "database tests on MariaDB"
TEST_MYSQL_URL="$mysql_url" run_tests -E 'kind(test)'

say "shell suite against a center on MariaDB"
center_port=$(free_port)
CENTER_ADMIN_PASSWORD=shell-admin-pw \
  "$root/target/debug/center-cloud" serve --listen "127.0.0.1:$center_port" \
  --data-dir "$work/center" --database-url "$mysql_url/center_shell" \
  >"$work/center.log" 2>&1 &
center_pid=$!
for _ in $(seq 1 100); do
  if curl -fsS --cacert "$work/center/tls/ca.crt" "https://127.0.0.1:$center_port/readyz" >/dev/null 2>&1; then break; fi
  sleep 0.2
done
export CENTER_URL="https://127.0.0.1:$center_port" CENTER_CA="$work/center/tls/ca.crt" CENTER_ADMIN_PASSWORD=shell-admin-pw
# Suite, reset, suite again: proves the suite is repeatable and reset restores the start.
bash tests/shell/center.sh >"$work/shell-first.log" || { cat "$work/shell-first.log"; exit 1; }
tail -n 1 "$work/shell-first.log"
bash tests/shell/reset.sh
bash tests/shell/center.sh
