# Functions to install and run a throwaway three-node MariaDB Galera cluster on loopback,
# for tests and benches of multi-primary writes. Source it after tests/mariadb.sh (it uses
# as_root, find_bin and free_port) with $work set to a scratch directory and `say` defined.
# start_galera sets the arrays galera_urls (server URLs without a database), galera_pids,
# galera_sockets and galera_ports, node N at index N-1; kill_galera_node N crashes one node;
# stop_galera ends them all. galera_sql N SQL runs SQL as root on node N.
# shellcheck shell=bash disable=SC2154,SC2034

galera_pids=()
galera_urls=()
galera_sockets=()
galera_ports=()
galera_client=""

galera_provider() {
  local lib
  for lib in /usr/lib/galera/libgalera_smm.so /usr/lib/galera-4/libgalera_smm.so \
    /usr/lib64/galera-4/libgalera_smm.so /usr/lib64/galera/libgalera_smm.so; do
    if [[ -f $lib ]]; then echo "$lib"; return 0; fi
  done
  # Other layouts (multiarch directories, builds under /usr/local): the first one found.
  lib=$(find /usr/lib /usr/lib64 /usr/local/lib -name libgalera_smm.so -print -quit 2>/dev/null) || true
  [[ -n $lib ]] || return 1
  echo "$lib"
}

install_galera() {
  local need=()
  galera_provider >/dev/null || need+=(galera-4)
  find_bin mariadbd mysqld >/dev/null || need+=(mariadb-server)
  find_bin mariadb mysql >/dev/null || need+=(mariadb-client)
  # A joining node gets its data from wsrep_sst_rsync, which runs an rsync daemon and
  # checks that it listens with ss or lsof, and looks for stale processes with ps.
  command -v rsync >/dev/null || need+=(rsync)
  command -v ss >/dev/null || command -v lsof >/dev/null || need+=(iproute2)
  command -v ps >/dev/null || need+=(procps)
  if ((${#need[@]})); then
    say "installing ${need[*]}"
    as_root apt-get update -qq
    # The package's own service must not start: tests run their own servers.
    as_root env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

galera_sql() { # node (1..3), SQL
  "$galera_client" --no-defaults --socket="${galera_sockets[$1 - 1]}" -uroot -NB -e "$2"
}

galera_alive() { # pid; a killed child stays a zombie until waited for, which is not alive
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ $stat != Z* ]]
}

galera_wait() { # node, cluster size: until the node is Synced in a primary of that size
  local n=$1 size=$2 status="" until=$((SECONDS + 60))
  while ((SECONDS < until)); do
    galera_alive "${galera_pids[n - 1]:-}" || break
    status=$(galera_sql "$n" "SHOW GLOBAL STATUS LIKE 'wsrep_%'" 2>/dev/null | awk '
      $1 == "wsrep_local_state_comment" { s = $2 } $1 == "wsrep_cluster_size" { c = $2 }
      END { print s, c }') || status=""
    if [[ $status == "Synced $size" ]]; then return 0; fi
    sleep 0.5
  done
  say "galera node $n did not reach Synced with cluster size $size (last: ${status:-no answer}); its error log ends:"
  tail -n 30 "$work/galera/node$n/error.log" >&2 || true
  return 1
}

start_galera() {
  local server install provider ports=() port i members=() cluster
  server=$(find_bin mariadbd mysqld)
  install=$(find_bin mariadb-install-db mysql_install_db)
  galera_client=$(find_bin mariadb mysql)
  provider=$(galera_provider) || { say "no libgalera_smm.so found: run install_galera"; return 1; }
  # Four distinct ports a node: SQL, group communication, IST and SST.
  while ((${#ports[@]} < 12)); do
    port=$(free_port)
    if [[ " ${ports[*]} " != *" $port "* ]]; then ports+=("$port"); fi
  done
  for i in 0 1 2; do members+=("127.0.0.1:${ports[4 * i + 1]}"); done
  cluster=$(IFS=,; echo "${members[*]}")
  galera_pids=() galera_urls=() galera_sockets=() galera_ports=()
  local sst_method=rsync bin="$work/galera/bin"
  # shellcheck disable=SC2016 # the wrappers expand $PATH and "$@" when they run
  if [[ $(id -u) -eq 0 ]]; then
    # The joiner's rsync daemon, started as root, drops to 'nobody' and may then not
    # write into root's data directory. mariadbd puts its own bin directory first in
    # PATH, so an rsync wrapper keeping it root is reached through an SST method of
    # our own that runs the stock wsrep_sst_rsync with our directory first.
    mkdir -p "$bin"
    printf '#!/bin/bash\n%s\nexec %q "$@"\n' \
      'case " $* " in *" --daemon "*) set -- --dparam=uid=0 --dparam=gid=0 "$@" ;; esac' "$(command -v rsync)" >"$bin/rsync"
    printf '#!/bin/bash\nPATH=%q:$PATH exec %q "$@"\n' "$bin" "$(find_bin wsrep_sst_rsync)" >"$bin/wsrep_sst_rsync_root"
    chmod +x "$bin/rsync" "$bin/wsrep_sst_rsync_root"
    sst_method=rsync_root
  fi
  for i in 1 2 3; do
    local dir="$work/galera/node$i" sql=${ports[4 * i - 4]} gcomm=${ports[4 * i - 3]}
    local ist=${ports[4 * i - 2]} sst=${ports[4 * i - 1]} first=()
    say "starting galera node $i on 127.0.0.1:$sql (gcomm $gcomm, IST $ist, SST $sst)"
    # The data directory is separate because SST replaces it with the donor's copy.
    mkdir -p "$dir/data"
    if ((i == 1)); then
      "$install" --no-defaults --datadir="$dir/data" --user="$(id -un)" \
        --auth-root-authentication-method=normal --skip-test-db >"$dir/install.log" 2>&1
      first=(--wsrep-new-cluster)
    fi
    galera_sockets+=("$dir/mariadb.sock")
    galera_ports+=("$sql")
    galera_urls+=("mysql://fleet:fleet@127.0.0.1:$sql")
    # Every listener is given 127.0.0.1 explicitly: Galera binds 0.0.0.0 by default, and
    # ist.recv_bind without a port means base_port + 1, not the port of ist.recv_addr.
    # Warnings printed before --log-error takes over go to the same file.
    PATH="$bin:$PATH" "$server" --no-defaults --user="$(id -un)" --datadir="$dir/data" \
      --socket="$dir/mariadb.sock" --pid-file="$dir/mariadb.pid" --log-error="$dir/error.log" \
      --port="$sql" --bind-address=127.0.0.1 \
      --max-connections=2000 --innodb-buffer-pool-size=256M --innodb-flush-log-at-trx-commit=2 \
      --binlog-format=ROW --default-storage-engine=InnoDB --innodb-autoinc-lock-mode=2 \
      --wsrep-on=ON --wsrep-provider="$provider" --wsrep-cluster-name=fleet-test \
      --wsrep-cluster-address="gcomm://$cluster" --wsrep-node-name="node$i" \
      --wsrep-node-address="127.0.0.1:$gcomm" --wsrep-node-incoming-address="127.0.0.1:$sql" \
      --wsrep-provider-options="base_host=127.0.0.1;base_port=$gcomm;gmcast.listen_addr=tcp://127.0.0.1:$gcomm;ist.recv_addr=127.0.0.1:$ist;ist.recv_bind=127.0.0.1:$ist" \
      --wsrep-sst-method="$sst_method" --wsrep-sst-receive-address="127.0.0.1:$sst" \
      "${first[@]}" 2>>"$dir/error.log" &
    galera_pids+=($!)
    # One joiner at a time: node 1 is the only possible donor and serves one SST at once.
    galera_wait "$i" "$i" || return 1
  done
  for i in 1 2; do galera_wait "$i" 3 || return 1; done
  galera_sql 1 "
    CREATE USER 'fleet'@'127.0.0.1' IDENTIFIED BY 'fleet';
    GRANT ALL PRIVILEGES ON *.* TO 'fleet'@'127.0.0.1';
    CREATE DATABASE center_shell;
    CREATE DATABASE edge_shell;"
  # Replicas apply asynchronously; a causal read makes each wait until they are in.
  for i in 2 3; do
    [[ $(galera_sql "$i" "SET SESSION wsrep_sync_wait=1;
      SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE '%\_shell'") == 2 ]] ||
      { say "galera node $i did not receive the databases"; return 1; }
  done
}

kill_galera_node() { # node (1..3): a crash, not a shutdown, so the others must notice
  local n=$1 pid i left=0
  pid=${galera_pids[n - 1]:-}
  if [[ -z $pid ]]; then say "galera node $n is not running"; return 1; fi
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  galera_pids[n - 1]=""
  for i in 0 1 2; do if [[ -n ${galera_pids[i]:-} ]]; then left=$((left + 1)); fi; done
  # Evicting the dead node takes evs.suspect_timeout (5 s). A lone survivor has lost
  # quorum and never reports Synced, so this fails then, as it should.
  for i in 1 2 3; do
    if [[ -n ${galera_pids[i - 1]:-} ]]; then galera_wait "$i" "$left" || return 1; fi
  done
}

galera_tree() { # pid: it and its descendants (SST scripts and their rsync daemon)
  ps -e -o pid=,ppid= 2>/dev/null | awk -v root="$1" '
    { parent[$1] = $2 }
    END { for (p in parent) { q = p; while (q != "" && q != root && q > 1) q = parent[q]; if (q == root) print p } }'
}

stop_galera() {
  local pid until=$((SECONDS + 30)) alive
  for pid in "${galera_pids[@]}"; do
    if [[ -n $pid ]]; then kill -TERM "$pid" 2>/dev/null || true; fi
  done
  while ((SECONDS < until)); do
    alive=0
    for pid in "${galera_pids[@]}"; do
      if [[ -n $pid ]] && galera_alive "$pid"; then alive=1; fi
    done
    ((alive)) || break
    sleep 0.2
  done
  for pid in "${galera_pids[@]}"; do
    if [[ -n $pid ]] && galera_alive "$pid"; then
      say "galera node with PID $pid ignored TERM for 30 s; killing it"
      # shellcheck disable=SC2046
      kill -KILL $(galera_tree "$pid") 2>/dev/null || true
    fi
    if [[ -n $pid ]]; then wait "$pid" 2>/dev/null || true; fi
  done
  galera_pids=()
}
