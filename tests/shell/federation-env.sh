#!/usr/bin/env bash
# Where a running local-federation's nodes listen, read from FEDERATION_DIR
# (endpoints.json, state.json), for federation.sh and reset.sh. Source it after
# lib.sh; do not run it. It logs the admin in at the center and at the first two
# edges, and defines `at NODE`, which points the calls that follow at NODE (center,
# edge-1 or edge-2) with its CA and its admin token in ADM.
#
# Sets: E1 E2 (edge ids; EDGE1 EDGE2 exported for jq), E1_DEVICES E2_DEVICES and E1_CA E2_CA (device endpoints and
# CAs), GROUP_ALL (the group of every simulated device), SIM1 SIM2 (a simulated device
# of each edge), SIM_COUNT and E2_SIM_COUNT, START_DEVICES (a file of the simulated
# devices' ids), ENDPOINTS and STATE (the two files).

# shellcheck disable=SC2034  # the variables are read by the sourcing scripts

ENDPOINTS=$FEDERATION_DIR/endpoints.json
STATE=$FEDERATION_DIR/state.json
[[ -r $ENDPOINTS ]] || die "$ENDPOINTS is missing: start local-federation with --data-dir $FEDERATION_DIR, or set FEDERATION_DIR"
[[ -r $STATE ]] || die "$STATE is not readable"
command -v jq >/dev/null 2>&1 || die "jq is required"
(($(jq '.edges | length' "$ENDPOINTS") >= 2)) || die "the federation has fewer than two edges"

C_URL=$(jq -r .center.api_url "$ENDPOINTS")
C_CA=$(jq -r .center.ca "$ENDPOINTS")
CENTER_ADMIN_PASSWORD=$(jq -r .admin_password "$STATE")
GROUP_ALL=$(jq -r '.group_all // empty' "$STATE")
require_tools
for i in 1 2; do
    printf -v "E$i" '%s' "$(jq -r ".edges[$((i - 1))].id" "$ENDPOINTS")"
    printf -v "E${i}_URL" '%s' "$(jq -r ".edges[$((i - 1))].api_url" "$ENDPOINTS")"
    printf -v "E${i}_CA" '%s' "$(jq -r ".edges[$((i - 1))].ca" "$ENDPOINTS")"
    printf -v "E${i}_DEVICES" '%s' "$(jq -r ".edges[$((i - 1))].devices_url" "$ENDPOINTS")"
done
# jq reads the ids as $ENV.EDGE1 and $ENV.EDGE2 ($ENV.E1 would lex as a number).
export EDGE1=$E1 EDGE2=$E2
START_DEVICES=$LIB_TMP/start-devices
jq -r '.devices[].id' "$STATE" >"$START_DEVICES"
SIM_COUNT=$(wc -l <"$START_DEVICES")
E2_SIM_COUNT=$(jq --arg e "$E2" '[.devices[] | select(.edge_id == $e)] | length' "$STATE")
SIM1=$(jq -r --arg e "$E1" '[.devices[] | select(.edge_id == $e)][0].id // empty' "$STATE")
SIM2=$(jq -r --arg e "$E2" '[.devices[] | select(.edge_id == $e)][0].id // empty' "$STATE")
[[ -n $SIM1 && -n $SIM2 && -n $GROUP_ALL ]] ||
    die "the federation needs a simulated device at each edge (local-federation --devices 2 or more)"
export SIM1 SIM2

TOKEN_CENTER="" TOKEN_EDGE1="" TOKEN_EDGE2="" AT_NODE=""

# at NODE: the calls that follow go to NODE (center, edge-1, edge-2), as its admin.
at() {
    local ca
    case $1 in
    center) CENTER_URL=$C_URL ca=$C_CA ADM=$TOKEN_CENTER ;;
    edge-1) CENTER_URL=$E1_URL ca=$E1_CA ADM=$TOKEN_EDGE1 ;;
    edge-2) CENTER_URL=$E2_URL ca=$E2_CA ADM=$TOKEN_EDGE2 ;;
    *) die "at: no node $1" ;;
    esac
    CURL_BASE=(curl -sS --max-time "$CENTER_CURL_TIMEOUT" --cacert "$ca")
    if [[ -n ${PACE_S-} && $1 != "$AT_NODE" ]]; then
        printf '# at %s (%s)\n' "$1" "$CENTER_URL"
    fi
    AT_NODE=$1
}

# Each node signs its own tokens: the admin logs in at each.
at center
admin_login
TOKEN_CENTER=$LOGIN_TOKEN
at edge-1
admin_login
TOKEN_EDGE1=$LOGIN_TOKEN
at edge-2
admin_login
TOKEN_EDGE2=$LOGIN_TOKEN
at center
