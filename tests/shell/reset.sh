#!/usr/bin/env bash
# Returns a running center to its initial state through its API: deletes every
# device (first, so that edges become deletable), every group, every edge and every
# user except the admin it logs in as. The event log is kept (it has no delete).
# Prints one line per removed object and a total; exits non-zero if anything could
# not be removed.
#
#   CENTER_URL             default https://127.0.0.1:8443
#   CENTER_CA              CA file to trust; empty: curl's default trust store
#   CENTER_ADMIN_USER      default admin
#   CENTER_ADMIN_PASSWORD  required
#   FEDERATION_DIR         a running local-federation's data directory: its center is
#                          the one reset (the three above are read from there), and
#                          what it started with stays: its edges, its simulated
#                          devices and their group `all`

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh disable=SC1091
. "$HERE/lib.sh"

# Ids that are part of the starting state, one per line.
KEEP=$LIB_TMP/keep
: >"$KEEP"
if [[ -n ${FEDERATION_DIR-} ]]; then
    # shellcheck source=federation-env.sh disable=SC1091
    . "$HERE/federation-env.sh"
    cat "$START_DEVICES" >"$KEEP"
    jq -r '.edges[].id' "$ENDPOINTS" >>"$KEEP"
    echo "$GROUP_ALL" >>"$KEEP"
    ADM=$TOKEN_CENTER
else
    require_tools
    admin_login
    ADM=$LOGIN_TOKEN
fi
PROBLEMS=0


problem() {
    PROBLEMS=$((PROBLEMS + 1))
    echo "error: $*" >&2
}

# collect PATH JQ_LINE: every item of a paged listing but those kept, one line each as
# JQ_LINE formats it (its first tab-separated field must be the id); into
# $LIB_TMP/items.
collect() {
    local page=1 n
    : >"$LIB_TMP/items"
    while :; do
        call "$ADM" GET "$1?per_page=1000&page=$page"
        if [[ $STATUS != 200 ]]; then
            problem "GET $1 page $page: HTTP $STATUS $(snippet)"
            return 1
        fi
        # One pass over the page, not one process per item.
        jval ".data.items[] | $2" |
            awk -F'\t' 'NR == FNR { keep[$1]; next } !($1 in keep)' "$KEEP" - >>"$LIB_TMP/items"
        n=$(jval '.data.items | length')
        ((n < 1000)) && return 0
        page=$((page + 1))
    done
}

# Devices, in batches through the seed contract's bulk delete.
removed_devices=0
if collect /api/v1/devices '"\(.id)\t\(.name) (\(.hardware.model)/\(.hardware.sn))"'; then
    cp "$LIB_TMP/items" "$LIB_TMP/devices"
    split -l 500 "$LIB_TMP/devices" "$LIB_TMP/batch."
    for batch in "$LIB_TMP"/batch.*; do
        [[ -e $batch ]] || continue
        ids=$(cut -f1 "$batch" | jq -R . | jq -cs '{ids: .}')
        call "$ADM" DELETE /v1/devices "$ids"
        if [[ $STATUS != 200 ]]; then
            problem "DELETE /v1/devices: HTTP $STATUS $(snippet)"
            continue
        fi
        jval '.data.ids[]' >"$LIB_TMP/deleted"
        while IFS=$'\t' read -r id label; do
            if grep -qx "$id" "$LIB_TMP/deleted"; then
                echo "removed device $id $label"
                removed_devices=$((removed_devices + 1))
            else
                problem "device $id $label was not deleted"
            fi
        done <"$batch"
    done
fi

# remove_each KIND PATH JQ_LINE [SKIP_NAME]: deletes every listed item one by one;
# an item whose second field equals SKIP_NAME is kept.
remove_each() {
    local kind=$1 path=$2 count=0 id name rest
    if collect "$path" "$3"; then
        cp "$LIB_TMP/items" "$LIB_TMP/$kind"
        while IFS=$'\t' read -r id name rest; do
            if [[ -n ${4-} && $name == "$4" ]]; then
                continue
            fi
            call "$ADM" DELETE "$path/$id"
            if [[ $STATUS == 200 ]]; then
                echo "removed $kind $id $name${rest:+ $rest}"
                count=$((count + 1))
            else
                problem "DELETE $path/$id ($name): HTTP $STATUS $(snippet)"
            fi
        done <"$LIB_TMP/$kind"
    fi
    printf -v "removed_${kind}s" '%d' "$count"
}

removed_groups=0 removed_edges=0 removed_users=0
remove_each group /api/v1/groups '"\(.id)\t\(.name)"'
remove_each edge /api/v1/edges '"\(.id)\t\(.name)\t(site \(.site), worker \(.worker_id))"'
remove_each user /api/v1/users '"\(.id)\t\(.username)\t(\(.role))"' "$CENTER_ADMIN_USER"

echo "removed $removed_devices devices, $removed_groups groups, $removed_edges edges, $removed_users users"
if ((PROBLEMS > 0)); then
    echo "$PROBLEMS problem(s); see above" >&2
    exit 1
fi
