#!/bin/sh
# Registers the compose stack's edges and their devices at the center, and waits for
# the edges to catch up. Two steps, because the edges can only start between them:
#
#   register.sh register    before the edges: an edge per site (POST /api/v1/edges) and
#                           FLEET_DEVICES_PER_SITE devices homed at it; writes, per site,
#                           SITE.env (EDGE_EDGE_ID, EDGE_EDGE_SECRET, EDGE_WORKER_ID) for
#                           the edge's entrypoint and SITE-devices.csv for the simulator
#   register.sh await-sync  after the edges: waits until every edge's link is up and it
#                           has acknowledged the center's whole change log, so the
#                           simulated devices exist at their edge before they log in
#                           (refused logins would get the simulator's address throttled)
#
# Safe to run again. An edge or device whose file is already there is left alone; one
# that exists at the center but whose secret was lost with its file gets a new secret
# (the rotation endpoints), since secrets are shown only once.
#
# Environment: CENTER_URL, CENTER_CA, CENTER_ADMIN_USER, CENTER_ADMIN_PASSWORD,
# FLEET_SITES, FLEET_DEVICES_PER_SITE, FLEET_JOIN_DIR, FLEET_SYNC_TIMEOUT_S.
# Secrets are written to the join files only, never printed.
set -eu

center=${CENTER_URL:-https://center:8443}
ca=${CENTER_CA:-/etc/fleet/ca/ca.crt}
admin=${CENTER_ADMIN_USER:-admin}
sites=${FLEET_SITES:-site-a site-b}
per_site=${FLEET_DEVICES_PER_SITE:-5}
join_dir=${FLEET_JOIN_DIR:-/var/lib/fleet-join}
sync_timeout=${FLEET_SYNC_TIMEOUT_S:-120}
model=fleet-simulator

umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

say() { printf 'register: %s\n' "$*"; }
die() {
    printf 'register: error: %s\n' "$*" >&2
    exit 1
}

# api METHOD PATH [JSON]: the answer's body goes to $work/body, its HTTP status to
# $status. The token travels in a header file, so it never shows in `ps`.
status=""
api() {
    method=$1
    path=$2
    if [ "$#" -ge 3 ]; then
        printf '%s' "$3" >"$work/request"
        set -- -H 'content-type: application/json' --data-binary @"$work/request"
    else
        set --
    fi
    status=$(curl -sS --cacert "$ca" --max-time 30 -X "$method" -H @"$work/headers" \
        "$@" -o "$work/body" -w '%{http_code}' "$center$path") || status=000
}

# field JQ: reads one value from the last answer.
field() { jq -r "$1" <"$work/body"; }

login() {
    : "${CENTER_ADMIN_PASSWORD:?CENTER_ADMIN_PASSWORD is required}"
    : >"$work/headers"
    body=$(jq -cn --arg u "$admin" --arg p "$CENTER_ADMIN_PASSWORD" \
        '{username: $u, password: $p}')
    tries=0
    while :; do
        api POST /api/v1/auth/login "$body"
        case $status in
            200) break ;;
            # Retrying a wrong password would only get this address throttled.
            401 | 403) die "the center refused admin's password (FLEET_ADMIN_PASSWORD)" ;;
        esac
        tries=$((tries + 1))
        [ "$tries" -lt 30 ] || die "login at $center failed: HTTP $status $(cat "$work/body" 2>/dev/null)"
        sleep 2
    done
    printf 'authorization: Bearer %s\n' "$(field .data.token)" >"$work/headers"
}

# write_file PATH: moves $work/out into place in one step, so a reader never sees
# half a file.
write_file() {
    mv "$work/out" "$1.tmp"
    mv "$1.tmp" "$1"
}

join_value() { sed -n "s/^$2=//p" "$1" | head -n 1; }

# ensure_edge SITE: prints the edge's id once its join file is right.
ensure_edge() {
    site=$1
    file=$join_dir/$site.env
    if [ -s "$file" ]; then
        id=$(join_value "$file" EDGE_EDGE_ID)
        api GET "/api/v1/edges/$id"
        if [ "$status" = 200 ]; then
            say "edge $site: kept (id $id)" >&2
            printf '%s\n' "$id"
            return
        fi
        say "edge $site: the center no longer knows edge $id; registering again" >&2
    fi
    name=edge-$site
    api GET "/api/v1/edges?site=$site&per_page=1000"
    [ "$status" = 200 ] || die "listing edges: HTTP $status"
    id=$(jq -r --arg n "$name" '.data.items[] | select(.name == $n) | .id' <"$work/body")
    if [ -n "$id" ]; then
        api POST "/api/v1/edges/$id/secret"
        [ "$status" = 200 ] || die "rotating the secret of edge $name: HTTP $status"
        say "edge $site: existed without a join file, issued a new secret (id $id)" >&2
    else
        api POST /api/v1/edges "$(jq -cn --arg n "$name" --arg s "$site" '{name: $n, site: $s}')"
        [ "$status" = 201 ] || die "registering edge $name: HTTP $status $(field .message)"
        id=$(field .data.id)
        say "edge $site: registered (id $id, worker id $(field .data.worker_id))" >&2
    fi
    jq -r '"EDGE_EDGE_ID=\(.data.id)\nEDGE_EDGE_SECRET=\(.data.secret)\nEDGE_WORKER_ID=\(.data.worker_id)"' \
        <"$work/body" >"$work/out"
    write_file "$file"
    printf '%s\n' "$id"
}

# ensure_devices SITE EDGE_ID: the site's simulated devices and their credentials file.
ensure_devices() {
    site=$1
    edge=$2
    file=$join_dir/$site-devices.csv
    if [ -s "$file" ] && [ "$(($(wc -l <"$file") - 1))" -eq "$per_site" ]; then
        say "devices of $site: kept ($per_site)"
        return
    fi
    echo "device_id,secret" >"$work/out"
    i=1
    while [ "$i" -le "$per_site" ]; do
        sn=$site-sim-$i
        api POST /api/v1/devices "$(jq -cn --arg sn "$sn" --arg e "$edge" --arg m "$model" \
            '{name: $sn, type: "simulated", hardware: {model: $m, sn: $sn},
              software: {version: "1.0.0"}, status: "active", edge_id: $e}')"
        case $status in
            201) ;;
            409)
                api GET "/api/v1/devices?model=$model&sn=$sn"
                [ "$status" = 200 ] || die "looking up device $sn: HTTP $status"
                id=$(field '.data.items[0].id')
                [ "$(field '.data.items[0].edge_id')" = "$edge" ] ||
                    die "device $sn exists but is homed elsewhere"
                api POST "/api/v1/devices/$id/secret"
                [ "$status" = 200 ] || die "rotating the secret of device $sn: HTTP $status"
                ;;
            *) die "registering device $sn: HTTP $status $(field .message)" ;;
        esac
        field '"\(.data.id),\(.data.secret)"' >>"$work/out"
        i=$((i + 1))
    done
    write_file "$file"
    say "devices of $site: $per_site registered"
}

register() {
    if [ ! -d "$join_dir" ] || [ ! -w "$join_dir" ]; then
        die "$join_dir is not a writable directory"
    fi
    login
    for site in $sites; do
        case $site in
            *[!a-z0-9-]* | '') die "site names are lower-case letters, digits and '-': '$site'" ;;
        esac
        edge=$(ensure_edge "$site")
        ensure_devices "$site" "$edge"
    done
}

await_sync() {
    login
    deadline=$(($(date +%s) + sync_timeout))
    for site in $sites; do
        file=$join_dir/$site.env
        [ -s "$file" ] || die "no join file for $site; run the register step first"
        id=$(join_value "$file" EDGE_EDGE_ID)
        while :; do
            api GET "/api/v1/edges/$id"
            if [ "$status" = 200 ] && [ "$(field '.data.link.online')" = true ] &&
                [ "$(field '.data.link.pending_to_edge')" = 0 ]; then
                say "edge $site: linked and caught up"
                break
            fi
            [ "$(date +%s)" -lt "$deadline" ] ||
                die "edge $site did not catch up within ${sync_timeout}s (HTTP $status $(jq -c .data.link <"$work/body" 2>/dev/null))"
            sleep 1
        done
    done
}

case ${1:-} in
    register) register ;;
    await-sync) await_sync ;;
    *)
        echo "usage: register.sh register|await-sync" >&2
        exit 64
        ;;
esac
