#!/bin/sh
# Entrypoint of the fleet images. Without arguments it runs the image's binary the
# usual way (`serve`, or `run` for the agent); with arguments it passes them on, so
# `docker run IMAGE print-schema` or `docker run IMAGE simulate …` work too.
#
# An edge may take its join credentials (id, secret, worker id) from a file instead of
# the environment: EDGE_JOIN_FILE names a file of KEY=VALUE lines, as the compose
# stack's register job writes them. The file is parsed, never sourced, so it cannot
# run anything.
set -eu

bin=${FLEET_BIN:?FLEET_BIN names the binary to run}
bin_dir=${FLEET_BIN_DIR:-/usr/local/bin}

die() {
    echo "fleet-entrypoint: $*" >&2
    exit 64
}

read_join_file() {
    file=$1
    waited=0
    # The file comes from a job that may finish just after this container starts.
    while [ ! -s "$file" ]; do
        [ "$waited" -ge "${EDGE_JOIN_WAIT_S:-60}" ] && die "no join file at $file"
        sleep 1
        waited=$((waited + 1))
    done
    while IFS= read -r line || [ -n "$line" ]; do
        case $line in
            '' | '#'*) continue ;;
        esac
        key=${line%%=*}
        value=${line#*=}
        case $key in
            EDGE_EDGE_ID | EDGE_EDGE_SECRET | EDGE_WORKER_ID) ;;
            *) die "$file: unexpected key '$key'" ;;
        esac
        case $value in
            '' | *[!A-Za-z0-9_-]*) die "$file: bad value for $key" ;;
        esac
        export "$key=$value"
    done <"$file"
    if [ -z "${EDGE_EDGE_ID:-}" ] || [ -z "${EDGE_EDGE_SECRET:-}" ] || [ -z "${EDGE_WORKER_ID:-}" ]; then
        die "$file must set EDGE_EDGE_ID, EDGE_EDGE_SECRET and EDGE_WORKER_ID"
    fi
}

if [ "$#" -eq 0 ]; then
    case $bin in
        device-agent) set -- run ;;
        *) set -- serve ;;
    esac
fi

if [ "$bin" = edge-cloud ] && [ "$1" = serve ] && [ -n "${EDGE_JOIN_FILE:-}" ]; then
    read_join_file "$EDGE_JOIN_FILE"
fi

exec "$bin_dir/$bin" "$@"
