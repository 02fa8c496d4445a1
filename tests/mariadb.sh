# Functions to install and run a throwaway MariaDB on loopback for tests and benches.
# Source it with $work set to a scratch directory; start_mariadb sets $mysql_url
# (a server URL without a database) and $db_pid; stop_mariadb ends it.
# shellcheck shell=bash disable=SC2154,SC2034

db_pid=""

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
  if command -v python3 >/dev/null; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
  else
    shuf -i 20000-60000 -n 1
  fi
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
    CREATE DATABASE edge_shell;"
  mysql_url="mysql://fleet:fleet@127.0.0.1:$db_port"
}

stop_mariadb() {
  if [[ -n "$db_pid" ]]; then
    kill "$db_pid" 2>/dev/null || true
    wait "$db_pid" 2>/dev/null || true
    db_pid=""
  fi
}
