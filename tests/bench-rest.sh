#!/usr/bin/env bash
# REST benchmark on SQLite and on a throwaway MariaDB (release build). Prints figures.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
work=$(mktemp -d /tmp/fleet-bench.XXXXXX)
say() { printf '==> %s\n' "$*"; }
# shellcheck source=tests/mariadb.sh
source "$root/tests/mariadb.sh"
trap 'stop_mariadb; rm -rf "$work"' EXIT
install_missing
start_mariadb
BENCH_MYSQL_URL="$mysql_url" cargo bench -p center-cloud --bench rest
