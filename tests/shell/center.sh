#!/usr/bin/env bash
# jq filters below read shell values through $ENV, so single quotes are intended.
# shellcheck disable=SC2016 source-path=SCRIPTDIR
# End-to-end walk through every northbound endpoint of a running center, with curl
# and jq. Each check prints "ok   - ..." or "FAIL - ... (details)"; the last line is
# "N passed, M failed" and the exit status is non-zero when anything failed.
#
#   CENTER_URL             default https://127.0.0.1:8443
#   CENTER_CA              CA file to trust (the dev CA is DATA_DIR/tls/ca.crt);
#                          empty: curl's default trust store
#   CENTER_ADMIN_USER      default admin
#   CENTER_ADMIN_PASSWORD  required
#   CENTER_BODY_LIMIT      the center's JSON body limit in bytes (default 1048576)
#
# Every name, serial number and username carries a per-run suffix, so the suite can
# run again and again against the same center; tests/shell/reset.sh empties it.

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh disable=SC1091
. "$HERE/lib.sh"

require_tools

RUN=$(date +%s%N)
export RUN
export MODEL="sh-model-$RUN"
CENTER_BODY_LIMIT=${CENTER_BODY_LIMIT:-1048576}
CSV_HEADER="id,name,type,hardware_model,hardware_sn,software_version,software_last_update,nic_type,nic_mac,nic_ipv4,status"

# devjson NAME TYPE SN STATUS [EXTRA_JSON]: a device document of this run's model,
# with one NIC; EXTRA_JSON is merged on top (groups, edge_id, nic...).
devjson() {
    local extra='{}'
    if (($# >= 5)); then extra=$5; fi
    jq -cn --arg n "$1" --arg t "$2" --arg m "$MODEL" --arg s "$3" --arg st "$4" \
        --argjson x "$extra" \
        '{name: $n, type: $t, hardware: {model: $m, sn: $s},
          software: {version: "1.0.0", last_update: "2024-01-01"},
          nic: [{type: "eth", mac: "02:00:00:00:00:01", ipv4: "10.0.0.1"}],
          status: $st, description: "made by center.sh"} + $x'
}

# ids: the sorted item ids of the last paged answer, comma-separated.
ids() {
    jval '[.data.items[].id] | sort | join(",")'
}

# sorted A B ...: the arguments sorted (as strings, like jq's sort), comma-separated.
sorted() {
    printf '%s\n' "$@" | sort | paste -sd, -
}

# -----------------------------------------------------------------------------
section "operations: health, readiness, metrics, docs"

call_h "X-Request-Id: center-sh-$RUN" "" GET /healthz
check_ok "GET /healthz answers 200 alive" 200 '.data.alive == true' '.message == "ok"'
check_eq "GET /healthz echoes X-Request-Id" "$(header x-request-id)" "center-sh-$RUN"

call "" GET /readyz
check_ok "GET /readyz answers 200 ready with the database ok" 200 \
    '.data.ready == true' '.data.database == "ok"'

call "" GET /metrics
check "GET /metrics answers 200" 200
check_true "GET /metrics is Prometheus text with request counters" \
    grep -q '^# TYPE http_requests counter' <<<"$BODY"
check_true "GET /metrics has latency histograms" \
    grep -q '^# TYPE http_request_duration_seconds histogram' <<<"$BODY"
check_true "GET /metrics has database pool gauges" grep -q '^db_pool_connections ' <<<"$BODY"

call "" GET /openapi.json
check "GET /openapi.json is an OpenAPI 3 document" 200 \
    '.openapi | startswith("3.")' '.info.title | length > 0'
check "GET /openapi.json documents every route" 200 \
    '.paths | has("/api/v1/auth/login") and has("/api/v1/users") and has("/api/v1/users/{id}")
        and has("/api/v1/users/{id}/groups") and has("/api/v1/devices")
        and has("/api/v1/devices/{id}") and has("/api/v1/devices/{id}/secret")
        and has("/api/v1/devices/{id}/groups") and has("/api/v1/devices/export")
        and has("/api/v1/devices/import") and has("/api/v1/groups")
        and has("/api/v1/groups/{id}") and has("/api/v1/groups/{id}/devices")
        and has("/api/v1/edges") and has("/api/v1/edges/{id}")
        and (.["/api/v1/edges/{id}"] | has("patch"))
        and has("/api/v1/edges/{id}/secret") and has("/api/v1/events")
        and has("/api/v1/rollouts") and has("/api/v1/rollouts/{id}/devices")
        and has("/v1/devices") and has("/healthz") and has("/readyz") and has("/metrics")'
check "GET /openapi.json declares the bearer scheme" 200 \
    '.components.securitySchemes.bearer.scheme | ascii_downcase == "bearer"'
check "GET /openapi.json documents the seed contract's four verbs" 200 \
    '.paths["/v1/devices"] | has("get") and has("post") and has("put") and has("delete")'

call "" GET /docs
check "GET /docs answers 200" 200
check_true "GET /docs is HTML" grep -qi '^text/html' <<<"$(header content-type)"

call "" GET /docs/swagger/
check "GET /docs/swagger/ answers 200" 200
check_true "GET /docs/swagger/ is the Swagger UI page" grep -qi 'swagger' <<<"$BODY"

# -----------------------------------------------------------------------------
section "auth"

login "$CENTER_ADMIN_USER" "$CENTER_ADMIN_PASSWORD"
check_ok "admin logs in" 200 '.data.token | type == "string" and length > 20' \
    '.data.role == "admin"' ".data.expires_at > $(date +%s)"
ADM=$LOGIN_TOKEN
if [[ -z $ADM ]]; then
    fail "admin token" "cannot go on without an admin token"
    summary
    exit 1
fi

login "$CENTER_ADMIN_USER" "wrong-password-$RUN"
check_error "login with a wrong password answers 401 UNAUTHENTICATED" 401 UNAUTHENTICATED
login "nobody-$RUN" "whatever-password"
check_error "login as an unknown user answers 401 UNAUTHENTICATED" 401 UNAUTHENTICATED
call "" POST /api/v1/auth/login '{"username": "admin"}'
check_error "login without a password answers 400 naming password" 400 INVALID_ARGUMENT password
call "" POST /api/v1/auth/login '{"username": "admin", '
check_error "login with malformed JSON answers 400 naming body" 400 INVALID_ARGUMENT body

call "" GET /api/v1/devices
check_error "no token answers 401 UNAUTHENTICATED" 401 UNAUTHENTICATED
call "not-a-token" GET /api/v1/devices
check_error "a forged token answers 401 UNAUTHENTICATED" 401 UNAUTHENTICATED
call_h "Authorization: Basic YWRtaW46YWRtaW4=" "" GET /api/v1/devices
check_error "Basic auth answers 401 UNAUTHENTICATED" 401 UNAUTHENTICATED
call "" GET /api/v1/events
check_error "events without a token answer 401" 401 UNAUTHENTICATED

# -----------------------------------------------------------------------------
section "groups"

call "$ADM" POST /api/v1/groups "{\"name\": \"sh-a-$RUN\", \"description\": \"group A\"}"
check_ok "create group A answers 201 with an id string" 201 '.data.id | test("^[0-9]+$")' \
    ".data.name == \"sh-a-$RUN\"" '.data.description == "group A"' '.data.devices == 0'
export GA
GA=$(jval '.data.id')
call "$ADM" POST /api/v1/groups "{\"name\": \"sh-b-$RUN\"}"
check_ok "create group B (description optional)" 201 '.data.description == ""'
export GB
GB=$(jval '.data.id')
call "$ADM" POST /api/v1/groups "{\"name\": \"sh-c-$RUN\", \"description\": \"to be deleted\"}"
check_ok "create group C" 201
export GC
GC=$(jval '.data.id')

call "$ADM" POST /api/v1/groups "{\"name\": \"sh-a-$RUN\"}"
check_error "duplicate group name answers 409 ALREADY_EXISTS naming name" 409 ALREADY_EXISTS name
call "$ADM" POST /api/v1/groups '{"name": "   "}'
check_error "blank group name answers 400 naming name" 400 INVALID_ARGUMENT name
call "$ADM" POST /api/v1/groups '{"description": "no name"}'
check_error "missing group name answers 400 naming name" 400 INVALID_ARGUMENT name

call "$ADM" GET "/api/v1/groups/$GA"
check_ok "get group A" 200 '.data.id == $ENV.GA' ".data.name == \"sh-a-$RUN\""
call "$ADM" GET "/api/v1/groups?name=$RUN"
check_ok "list groups filtered by name finds this run's three" 200 '.data.total == 3' \
    '.data.items | length == 3' '[.data.items[].name] == ([.data.items[].name] | sort)'
call "$ADM" GET "/api/v1/groups?name=$RUN&per_page=2&page=2"
check_ok "list groups paginates" 200 '.data.total == 3' '.data.items | length == 1' \
    '.data.page == 2' '.data.per_page == 2'
call "$ADM" PATCH "/api/v1/groups/$GA" '{"description": "group A, described"}'
check_ok "patch group A description" 200 '.data.description == "group A, described"' \
    ".data.name == \"sh-a-$RUN\""
call "$ADM" PATCH "/api/v1/groups/$GB" "{\"name\": \"sh-a-$RUN\"}"
check_error "renaming group B to A's name answers 409 naming name" 409 ALREADY_EXISTS name
call "$ADM" PATCH "/api/v1/groups/$GC" "{\"name\": \"sh-c2-$RUN\"}"
check_ok "rename group C" 200 ".data.name == \"sh-c2-$RUN\""
call "$ADM" GET /api/v1/groups/abc
check_error "group id 'abc' answers 400 naming id" 400 INVALID_ARGUMENT id
call "$ADM" GET /api/v1/groups/1
check_error "unknown group answers 404 NOT_FOUND" 404 NOT_FOUND

# -----------------------------------------------------------------------------
section "edges"

call "$ADM" POST /api/v1/edges "{\"name\": \"sh-edge-$RUN\", \"site\": \"site-$RUN\"}"
check_ok "register an edge answers 201 with id, worker_id and secret" 201 \
    '.data.id | test("^[0-9]+$")' '.data.worker_id >= 2 and .data.worker_id <= 1023' \
    '.data.secret | type == "string" and length >= 16' ".data.site == \"site-$RUN\""
export EDGE
EDGE=$(jval '.data.id')
EDGE_SECRET=$(jval '.data.secret')
EDGE_WORKER=$(jval '.data.worker_id')
call "$ADM" POST /api/v1/edges "{\"name\": \"sh-edge-$RUN\", \"site\": \"elsewhere\"}"
check_error "duplicate edge name answers 409 ALREADY_EXISTS naming name" 409 ALREADY_EXISTS name
call "$ADM" POST /api/v1/edges '{"name": ""}'
check_error "blank edge name answers 400 naming name" 400 INVALID_ARGUMENT name
call "$ADM" GET "/api/v1/edges?per_page=1000"
check_ok "list edges includes the new edge" 200 'any(.data.items[]; .id == $ENV.EDGE)'
call "$ADM" GET "/api/v1/edges?site=site-$RUN"
check_ok "list edges filtered by site" 200 '.data.total == 1' '.data.items[0].id == $ENV.EDGE'
call "$ADM" GET "/api/v1/edges/$EDGE"
check_ok "get edge shows it without its secret" 200 '.data.id == $ENV.EDGE' \
    ".data.name == \"sh-edge-$RUN\"" '.data | has("secret") | not'
call "$ADM" POST "/api/v1/edges/$EDGE/secret"
check_ok "rotate edge secret" 200 '.data.id == $ENV.EDGE' ".data.worker_id == $EDGE_WORKER" \
    '.data.secret | type == "string" and length >= 16'
check_true "rotated edge secret differs from the first" test "$(jval '.data.secret')" != "$EDGE_SECRET"
call "$ADM" GET /api/v1/edges/1
check_error "unknown edge answers 404" 404 NOT_FOUND
call "$ADM" PATCH "/api/v1/edges/$EDGE" "{\"site\": \"moved-$RUN\"}"
check_ok "PATCH edge moves it to another site, its name kept" 200 ".data.site == \"moved-$RUN\"" \
    ".data.name == \"sh-edge-$RUN\"" ".data.worker_id == $EDGE_WORKER"
call "$ADM" PATCH "/api/v1/edges/$EDGE" '{"name": ""}'
check_error "PATCH edge with an empty name answers 400 naming name" 400 INVALID_ARGUMENT name
call "$ADM" PATCH "/api/v1/edges/$EDGE" "{\"site\": \"site-$RUN\"}"
check_ok "PATCH edge back to its site" 200 ".data.site == \"site-$RUN\""

# -----------------------------------------------------------------------------
section "devices"

call "$ADM" POST /api/v1/devices "$(devjson "sh-gw-1-$RUN" gateway "S1-$RUN" online \
    "{\"groups\": [\"$GA\"], \"edge_id\": \"$EDGE\"}")"
check_ok "create device 1 answers 201 with id and secret" 201 '.data.id | test("^[0-9]+$")' \
    '.data.secret | type == "string" and length >= 16' ".data.name == \"sh-gw-1-$RUN\"" \
    '.data.type == "gateway"' '.data.hardware.model == $ENV.MODEL' \
    ".data.hardware.sn == \"S1-$RUN\"" '.data.software == {version: "1.0.0", last_update: "2024-01-01"}' \
    '.data.nic == [{type: "eth", mac: "02:00:00:00:00:01", ipv4: "10.0.0.1"}]' \
    '.data.status == "online"' '.data.edge_id == $ENV.EDGE' '.data.created_at > 0'
export D1
D1=$(jval '.data.id')
D1_SECRET=$(jval '.data.secret')
call "$ADM" POST /api/v1/devices "$(devjson "sh-gw-2-$RUN" gateway "S2-$RUN" offline \
    "{\"groups\": [\"$GB\"]}")"
check_ok "create device 2 (group B)" 201 '.data.edge_id == null'
export D2
D2=$(jval '.data.id')
call "$ADM" POST /api/v1/devices "$(devjson "sh-sensor-3-$RUN" sensor "S3-$RUN" online)"
check_ok "create device 3 (no group)" 201
export D3
D3=$(jval '.data.id')
call "$ADM" POST /api/v1/devices "$(devjson "sh-sensor-4-$RUN" sensor "S4-$RUN" offline \
    '{"nic": [{"type": "eth", "mac": "02:00:00:00:00:04", "ipv4": "10.0.0.4"},
              {"type": "wifi", "mac": "02-00-00-00-01-04", "ipv4": "10.0.1.4"}]}')"
check_ok "create device 4 (two NICs, dashed MAC)" 201 '.data.nic | length == 2' \
    '.data.nic[1].mac == "02-00-00-00-01-04"'
export D4
D4=$(jval '.data.id')
call "$ADM" POST /api/v1/devices "$(devjson "sh-cam-5-$RUN" camera "S5-$RUN" online)"
check_ok "create device 5" 201
export D5
D5=$(jval '.data.id')

call "$ADM" GET "/api/v1/devices/$D1"
check_ok "get device 1" 200 '.data.id == $ENV.D1' ".data.name == \"sh-gw-1-$RUN\"" \
    '.data.description == "made by center.sh"' '.data | has("secret") | not'
call "$ADM" GET "/api/v1/devices/$D1/groups"
check_ok "device 1 is in group A" 200 '.data == [$ENV.GA]'

# Filters and pagination, all within this run's hardware model.
call "$ADM" GET "/api/v1/devices?model=$MODEL"
check_ok "filter by model finds the five devices" 200 '.data.total == 5' '.data.items | length == 5'
call "$ADM" GET "/api/v1/devices?model=$MODEL&type=gateway"
check_eq "filter by type" "$(ids)" "$(sorted "$D1" "$D2")"
call "$ADM" GET "/api/v1/devices?model=$MODEL&type=sensor&status=offline"
check_eq "filter by type and status" "$(ids)" "$D4"
call "$ADM" GET "/api/v1/devices?model=$MODEL&status=online"
check_ok "filter by status" 200 '.data.total == 3'
call "$ADM" GET "/api/v1/devices?model=$MODEL&sn=S3-$RUN"
check_eq "filter by serial number" "$(ids)" "$D3"
call "$ADM" GET "/api/v1/devices?name=sensor-3-$RUN"
check_eq "filter by name substring" "$(ids)" "$D3"
call "$ADM" GET "/api/v1/devices?group=$GA"
check_eq "filter by group" "$(ids)" "$D1"
call "$ADM" GET "/api/v1/devices?edge=$EDGE"
check_eq "filter by edge" "$(ids)" "$D1"
call "$ADM" GET "/api/v1/devices?model=$MODEL&type=nosuchtype"
check_ok "a filter matching nothing answers an empty page" 200 '.data.total == 0' '.data.items == []'

ALL5=$(sorted "$D1" "$D2" "$D3" "$D4" "$D5")
call "$ADM" GET "/api/v1/devices?model=$MODEL&per_page=2&page=1"
check_ok "page 1 of 3 has 2 devices" 200 '.data.items | length == 2' '.data.total == 5' \
    '.data.page == 1' '.data.per_page == 2'
P1=$(jval '[.data.items[].id] | join(",")')
check_eq "pages are ordered by id" "$P1" "$(jval '[.data.items[].id] | sort_by(tonumber) | join(",")')"
call "$ADM" GET "/api/v1/devices?model=$MODEL&per_page=2&page=2"
check_ok "page 2 of 3 has 2 devices" 200 '.data.items | length == 2'
P2=$(jval '[.data.items[].id] | join(",")')
call "$ADM" GET "/api/v1/devices?model=$MODEL&per_page=2&page=3"
check_ok "page 3 of 3 has 1 device" 200 '.data.items | length == 1'
P3=$(jval '[.data.items[].id] | join(",")')
IFS=, read -r -a PAGED <<<"$P1,$P2,$P3"
check_eq "pages 1-3 together are the five devices, once each" "$(sorted "${PAGED[@]}")" "$ALL5"
call "$ADM" GET "/api/v1/devices?model=$MODEL&per_page=2&page=4"
check_ok "a page past the end is empty" 200 '.data.items == []' '.data.total == 5'
call "$ADM" GET "/api/v1/devices?per_page=0"
check_error "per_page=0 answers 400 naming per_page" 400 INVALID_ARGUMENT per_page
call "$ADM" GET "/api/v1/devices?per_page=1001"
check_error "per_page=1001 answers 400 naming per_page" 400 INVALID_ARGUMENT per_page
call "$ADM" GET "/api/v1/devices?page=0"
check_error "page=0 answers 400 naming page" 400 INVALID_ARGUMENT page
call "$ADM" GET "/api/v1/devices?page=abc"
check_error "page=abc answers 400 naming page" 400 INVALID_ARGUMENT page
call "$ADM" GET "/api/v1/devices?group=abc"
check_error "group=abc answers 400 naming group" 400 INVALID_ARGUMENT group

# Validation and conflicts.
call "$ADM" POST /api/v1/devices "$(devjson "sh-dup-$RUN" gateway "S1-$RUN" online)"
check_error "duplicate (model, sn) answers 409 ALREADY_EXISTS naming hardware.sn" 409 \
    ALREADY_EXISTS hardware.sn
call "$ADM" POST /api/v1/devices "$(devjson "sh-other-model-$RUN" gateway "S1-$RUN" online \
    "{\"hardware\": {\"model\": \"$MODEL-other\", \"sn\": \"S1-$RUN\"}}")"
check_ok "the same sn under another model is not a duplicate" 201
call "$ADM" DELETE "/api/v1/devices/$(jval '.data.id')"
check_ok "delete the other-model device" 200
call "$ADM" PATCH "/api/v1/devices/$D2" "{\"hardware\": {\"sn\": \"S1-$RUN\"}}"
check_error "patching onto another device's (model, sn) answers 409 naming hardware.sn" 409 \
    ALREADY_EXISTS hardware.sn
call "$ADM" POST /api/v1/devices "$(devjson "sh-bad-$RUN" gateway "BAD1-$RUN" online \
    '{"nic": [{"type": "eth", "mac": "12:34:56:78:9a", "ipv4": "10.0.0.1"}]}')"
check_error "short MAC answers 400 naming nic[0].mac" 400 INVALID_ARGUMENT 'nic[0].mac'
call "$ADM" POST /api/v1/devices "$(devjson "sh-bad-$RUN" gateway "BAD1-$RUN" online \
    '{"nic": [{"type": "eth", "mac": "12:34:56:78:9a:bc"}, {"type": "wifi", "mac": "12:34:56:78:9a:zz"}]}')"
check_error "non-hex MAC on the second NIC answers 400 naming nic[1].mac" 400 INVALID_ARGUMENT 'nic[1].mac'
call "$ADM" POST /api/v1/devices "$(devjson "sh-bad-$RUN" gateway "BAD1-$RUN" online \
    '{"nic": [{"type": "eth", "ipv4": "300.1.1.1"}]}')"
check_error "out-of-range IPv4 answers 400 naming nic[0].ipv4" 400 INVALID_ARGUMENT 'nic[0].ipv4'
call "$ADM" POST /api/v1/devices "$(devjson "sh-bad-$RUN" gateway "BAD1-$RUN" online \
    '{"nic": [{"type": "eth", "ipv4": "10.0.0"}]}')"
check_error "three-octet IPv4 answers 400 naming nic[0].ipv4" 400 INVALID_ARGUMENT 'nic[0].ipv4'
call "$ADM" POST /api/v1/devices "{\"type\": \"gateway\", \"hardware\": {\"model\": \"$MODEL\", \"sn\": \"BAD2-$RUN\"}}"
check_error "missing name answers 400 naming name" 400 INVALID_ARGUMENT name
call "$ADM" POST /api/v1/devices "{\"name\": \"x\", \"type\": \"gateway\", \"hardware\": {\"model\": \"$MODEL\"}}"
check_error "missing hardware.sn answers 400 naming hardware.sn" 400 INVALID_ARGUMENT hardware.sn
call "$ADM" POST /api/v1/devices "$(devjson "sh-bad-$RUN" " " "BAD3-$RUN" online)"
check_error "blank type answers 400 naming type" 400 INVALID_ARGUMENT type
call "$ADM" POST /api/v1/devices "$(devjson "sh-bad-$RUN" gateway "BAD4-$RUN" online \
    '{"software": {"version": "1.0 beta"}}')"
check_error "bad software version answers 400 naming software.version" 400 INVALID_ARGUMENT software.version
call "$ADM" POST /api/v1/devices "$(devjson 5 gateway "BAD5-$RUN" online '{"name": 5}')"
check_error "a number for name answers 400 naming name" 400 INVALID_ARGUMENT name
call "$ADM" POST /api/v1/devices "$(devjson "sh-bad-$RUN" gateway "BAD6-$RUN" online \
    '{"groups": ["1"]}')"
check_error "unknown group at creation answers 404 naming groups[0]" 404 NOT_FOUND 'groups[0]'
call "$ADM" POST /api/v1/devices "$(devjson "sh-bad-$RUN" gateway "BAD7-$RUN" online \
    '{"edge_id": "1"}')"
check_error "unknown edge at creation answers 404 naming edge_id" 404 NOT_FOUND edge_id
call "$ADM" GET "/api/v1/devices?model=$MODEL"
check_ok "rejected creations left nothing behind" 200 '.data.total == 5'

# Update.
call "$ADM" PATCH "/api/v1/devices/$D3" "{\"name\": \"sh-sensor-3b-$RUN\", \"status\": \"maintenance\", \"software\": {\"version\": \"1.1.0\"}}"
check_ok "patch device 3 changes only the given fields" 200 ".data.name == \"sh-sensor-3b-$RUN\"" \
    '.data.status == "maintenance"' '.data.software == {version: "1.1.0", last_update: "2024-01-01"}' \
    ".data.hardware.sn == \"S3-$RUN\"" '.data.type == "sensor"' '.data.nic | length == 1' \
    '.data.updated_at >= .data.created_at'
call "$ADM" PATCH "/api/v1/devices/$D3" '{"software": {"last update": "2024-06-30"}}'
check_ok "patch accepts the seed's 'last update' spelling" 200 \
    '.data.software == {version: "1.1.0", last_update: "2024-06-30"}'
call "$ADM" GET "/api/v1/devices/$D3"
check_ok "the patch is stored" 200 ".data.name == \"sh-sensor-3b-$RUN\"" '.data.status == "maintenance"'
call "$ADM" PATCH "/api/v1/devices/$D3" '{"nic": [{"type": "eth", "mac": "not-a-mac"}]}'
check_error "patch with a bad MAC answers 400 naming nic[0].mac" 400 INVALID_ARGUMENT 'nic[0].mac'
call "$ADM" PATCH "/api/v1/devices/$D3" '{"name": ""}'
check_error "patch with a blank name answers 400 naming name" 400 INVALID_ARGUMENT name
call "$ADM" PATCH "/api/v1/devices/$D3" '{"edge_id": "1"}'
check_error "patch to an unknown edge answers 404 naming edge_id" 404 NOT_FOUND edge_id
call "$ADM" PATCH /api/v1/devices/1 '{"status": "x"}'
check_error "patch of an unknown device answers 404" 404 NOT_FOUND

# Secrets.
call "$ADM" POST "/api/v1/devices/$D1/secret"
check_ok "rotate device 1's secret" 200 '.data.id == $ENV.D1' \
    '.data.secret | type == "string" and length >= 16'
D1_SECRET2=$(jval '.data.secret')
check_true "the rotated device secret differs from the first" test "$D1_SECRET2" != "$D1_SECRET"
call "$ADM" POST "/api/v1/devices/$D1/secret"
check_true "rotating again gives yet another secret" test "$(jval '.data.secret')" != "$D1_SECRET2"
call "$ADM" POST /api/v1/devices/1/secret
check_error "rotating an unknown device's secret answers 404" 404 NOT_FOUND

call "$ADM" GET /api/v1/devices/abc
check_error "device id 'abc' answers 400 naming id" 400 INVALID_ARGUMENT id
call "$ADM" GET /api/v1/devices/1
check_error "unknown device answers 404 NOT_FOUND" 404 NOT_FOUND

# Delete; the (model, sn) is free again afterwards.
call "$ADM" POST /api/v1/devices "$(devjson "sh-gone-$RUN" gateway "S6-$RUN" online)"
check_ok "create device 6 to delete" 201
export D6
D6=$(jval '.data.id')
call "$ADM" DELETE "/api/v1/devices/$D6"
check_ok "delete device 6" 200 '.data.id == $ENV.D6'
call "$ADM" GET "/api/v1/devices/$D6"
check_error "a deleted device answers 404" 404 NOT_FOUND
call "$ADM" DELETE "/api/v1/devices/$D6"
check_error "deleting it again answers 404" 404 NOT_FOUND
call "$ADM" POST /api/v1/devices "$(devjson "sh-again-$RUN" gateway "S6-$RUN" online)"
check_ok "a deleted device's (model, sn) can be registered again" 201 '.data.id != $ENV.D6'
D6B=$(jval '.data.id')
call "$ADM" DELETE "/api/v1/devices/$D6B"
check_ok "delete the re-registered device" 200

# -----------------------------------------------------------------------------
section "users and scoping"

OP_USER="sh-op-$RUN"
OP_PASS="op-pass-$RUN"
VW_USER="sh-vw-$RUN"
VW_PASS="vw-pass-$RUN"
call "$ADM" POST /api/v1/users "{\"username\": \"$OP_USER\", \"password\": \"$OP_PASS\", \"role\": \"operator\", \"groups\": [\"$GA\"]}"
check_ok "create an operator scoped to group A" 201 '.data.id | test("^[0-9]+$")' \
    ".data.username == \"$OP_USER\"" '.data.role == "operator"' '.data.groups == [$ENV.GA]' \
    '.data | has("password") or has("password_hash") | not'
export OP
OP=$(jval '.data.id')
call "$ADM" POST /api/v1/users "{\"username\": \"$VW_USER\", \"password\": \"$VW_PASS\", \"role\": \"viewer\", \"groups\": [\"$GA\"]}"
check_ok "create a viewer scoped to group A" 201 '.data.role == "viewer"' '.data.groups == [$ENV.GA]'
export VW
VW=$(jval '.data.id')

call "$ADM" POST /api/v1/users "{\"username\": \"$OP_USER\", \"password\": \"another-pass\", \"role\": \"viewer\"}"
check_error "duplicate username answers 409 ALREADY_EXISTS naming username" 409 ALREADY_EXISTS username
call "$ADM" POST /api/v1/users '{"username": "has space", "password": "long-enough", "role": "viewer"}'
check_error "bad username answers 400 naming username" 400 INVALID_ARGUMENT username
call "$ADM" POST /api/v1/users "{\"username\": \"sh-short-$RUN\", \"password\": \"short\", \"role\": \"viewer\"}"
check_error "short password answers 400 naming password" 400 INVALID_ARGUMENT password
call "$ADM" POST /api/v1/users "{\"username\": \"sh-root-$RUN\", \"password\": \"long-enough\", \"role\": \"root\"}"
check_error "unknown role answers 400 naming role" 400 INVALID_ARGUMENT role
call "$ADM" POST /api/v1/users "{\"username\": \"sh-nog-$RUN\", \"password\": \"long-enough\", \"role\": \"viewer\", \"groups\": [\"1\"]}"
check_error "unknown group for a user answers 404 naming groups[0]" 404 NOT_FOUND 'groups[0]'

call "$ADM" GET "/api/v1/users?role=operator&per_page=1000"
check_ok "list users by role includes the operator" 200 \
    'any(.data.items[]; .username == "'"$OP_USER"'")' \
    '[.data.items[].role] | all(. == "operator")'
call "$ADM" GET "/api/v1/users?per_page=1000"
check_ok "list users includes the admin" 200 \
    'any(.data.items[]; .username == "'"$CENTER_ADMIN_USER"'")'
export ADMIN_ID
ADMIN_ID=$(jval '.data.items[] | select(.username == "'"$CENTER_ADMIN_USER"'") | .id')
call "$ADM" GET "/api/v1/users/$OP"
check_ok "get the operator" 200 '.data.id == $ENV.OP' ".data.username == \"$OP_USER\""
call "$ADM" GET /api/v1/users/1
check_error "unknown user answers 404" 404 NOT_FOUND
call "$ADM" GET "/api/v1/users/$ADMIN_ID/groups"
check_ok "the admin is scoped to no group" 200 '.data == []'
call "$ADM" DELETE "/api/v1/users/$ADMIN_ID"
check_error "the admin cannot delete their own account (409)" 409 FAILED_PRECONDITION

login "$OP_USER" "$OP_PASS"
check_ok "the operator logs in" 200 '.data.role == "operator"'
OPT=$LOGIN_TOKEN
login "$VW_USER" "$VW_PASS"
check_ok "the viewer logs in" 200 '.data.role == "viewer"'
VWT=$LOGIN_TOKEN

# Operator: group A only.
call "$OPT" GET /api/v1/devices
check_eq "the operator lists only the devices of group A" "$(ids)" "$D1"
call "$OPT" GET "/api/v1/devices/$D1"
check_ok "the operator reads a device of group A" 200 '.data.id == $ENV.D1'
call "$OPT" GET "/api/v1/devices/$D2"
check_error "the operator gets 404 for a device of group B" 404 NOT_FOUND
call "$OPT" GET "/api/v1/devices/$D3"
check_error "the operator gets 404 for a device in no group" 404 NOT_FOUND
call "$OPT" PATCH "/api/v1/devices/$D2" '{"status": "hacked"}'
check_error "the operator cannot patch a device of group B (404)" 404 NOT_FOUND
call "$OPT" DELETE "/api/v1/devices/$D2"
check_error "the operator cannot delete a device of group B (404)" 404 NOT_FOUND
call "$OPT" POST "/api/v1/devices/$D2/secret"
check_error "the operator cannot rotate a device of group B (404)" 404 NOT_FOUND
call "$OPT" PATCH "/api/v1/devices/$D1" '{"status": "maintenance"}'
check_ok "the operator patches a device of group A" 200 '.data.status == "maintenance"'
call "$OPT" POST /api/v1/devices "$(devjson "sh-op-nogroup-$RUN" gateway "S7-$RUN" online)"
check_error "an operator's device must name a group (400 naming groups)" 400 INVALID_ARGUMENT groups
call "$OPT" POST /api/v1/devices "$(devjson "sh-op-b-$RUN" gateway "S7-$RUN" online "{\"groups\": [\"$GB\"]}")"
check_error "an operator cannot place a device in group B (404 naming groups[0])" 404 NOT_FOUND 'groups[0]'
call "$OPT" POST /api/v1/devices "$(devjson "sh-op-7-$RUN" gateway "S7-$RUN" online "{\"groups\": [\"$GA\"]}")"
check_ok "the operator creates a device in group A" 201
export D7
D7=$(jval '.data.id')
call "$OPT" GET "/api/v1/devices?per_page=1000"
check_eq "the operator now sees devices 1 and 7" "$(ids)" "$(sorted "$D1" "$D7")"
call "$OPT" GET /api/v1/groups
check_eq "the operator lists only group A" "$(ids)" "$GA"
call "$OPT" GET "/api/v1/groups/$GB"
check_error "the operator gets 404 for group B" 404 NOT_FOUND
call "$OPT" GET "/api/v1/groups/$GA/devices"
check_eq "the operator lists group A's devices" "$(ids)" "$(sorted "$D1" "$D7")"
call "$OPT" POST "/api/v1/groups/$GA/devices" "{\"device_ids\": [\"$D2\"]}"
check_error "the operator cannot add an unseen device to group A (404 naming device_ids[0])" 404 \
    NOT_FOUND 'device_ids[0]'
call "$OPT" POST /api/v1/groups '{"name": "operator-made"}'
check_error "the operator cannot create groups (403)" 403 PERMISSION_DENIED
call "$OPT" PATCH "/api/v1/groups/$GA" '{"description": "operator was here"}'
check_error "the operator cannot patch groups (403)" 403 PERMISSION_DENIED
call "$OPT" DELETE "/api/v1/groups/$GA"
check_error "the operator cannot delete groups (403)" 403 PERMISSION_DENIED
call "$OPT" GET /api/v1/users
check_error "the operator cannot list users (403)" 403 PERMISSION_DENIED
call "$OPT" GET "/api/v1/users/$OP"
check_ok "the operator reads their own account" 200 '.data.id == $ENV.OP' '.data.groups == [$ENV.GA]'
call "$OPT" GET "/api/v1/users/$VW"
check_error "the operator cannot read another account (403)" 403 PERMISSION_DENIED
call "$OPT" PUT "/api/v1/users/$OP/groups" "{\"group_ids\": [\"$GA\", \"$GB\"]}"
check_error "the operator cannot change their own scope (403)" 403 PERMISSION_DENIED
call "$OPT" GET /api/v1/edges
check_error "the operator cannot list edges (403)" 403 PERMISSION_DENIED

# Viewer: reads group A, writes nothing.
call "$VWT" GET "/api/v1/devices?per_page=1000"
check_eq "the viewer lists only the devices of group A" "$(ids)" "$(sorted "$D1" "$D7")"
call "$VWT" GET "/api/v1/devices/$D1"
check_ok "the viewer reads a device of group A" 200 '.data.id == $ENV.D1'
call "$VWT" GET "/api/v1/devices/$D2"
check_error "the viewer gets 404 for a device of group B" 404 NOT_FOUND
call "$VWT" PATCH "/api/v1/devices/$D1" '{"status": "viewer-was-here"}'
check_error "the viewer cannot patch (403 PERMISSION_DENIED)" 403 PERMISSION_DENIED
call "$VWT" POST /api/v1/devices "$(devjson "sh-vw-$RUN" gateway "S8-$RUN" online "{\"groups\": [\"$GA\"]}")"
check_error "the viewer cannot create devices (403)" 403 PERMISSION_DENIED
call "$VWT" DELETE "/api/v1/devices/$D1"
check_error "the viewer cannot delete devices (403)" 403 PERMISSION_DENIED
call "$VWT" POST "/api/v1/devices/$D1/secret"
check_error "the viewer cannot rotate secrets (403)" 403 PERMISSION_DENIED
call "$VWT" POST "/api/v1/devices/$D1/groups" "{\"group_ids\": [\"$GA\"]}"
check_error "the viewer cannot change a device's groups (403)" 403 PERMISSION_DENIED
call "$VWT" POST "/api/v1/groups/$GA/devices" "{\"device_ids\": [\"$D1\"]}"
check_error "the viewer cannot change group members (403)" 403 PERMISSION_DENIED
call "$VWT" POST /api/v1/devices/import "$CSV_HEADER" text/csv
check_error "the viewer cannot import (403)" 403 PERMISSION_DENIED
call "$VWT" POST /v1/devices "$(devjson "sh-vw-$RUN" gateway "S8-$RUN" online "{\"groups\": [\"$GA\"]}")"
check_error "the viewer cannot POST /v1/devices (403)" 403 PERMISSION_DENIED
call "$VWT" PUT /v1/devices "{\"id\": \"$D1\", \"status\": \"x\"}"
check_error "the viewer cannot PUT /v1/devices (403)" 403 PERMISSION_DENIED
call "$VWT" DELETE /v1/devices "{\"ids\": [\"$D1\"]}"
check_error "the viewer cannot DELETE /v1/devices (403)" 403 PERMISSION_DENIED
call "$VWT" GET /v1/devices "{\"id\": \"$D2\"}"
check_ok "the viewer finds nothing outside its scope on /v1/devices" 200 '.data == []'
call "$VWT" GET /api/v1/devices/export
check "the viewer exports CSV" 200
check_eq "the viewer's export holds only group A's devices" \
    "$(tr -d '\r' <<<"$BODY" | tail -n +2 | cut -d, -f1 | sort | paste -sd, -)" "$(sorted "$D1" "$D7")"
call "$ADM" GET "/api/v1/devices/$D1"
check_ok "the viewer's attempts changed nothing" 200 '.data.status == "maintenance"'

# Scope changes through /users/{id}/groups apply at once.
call "$ADM" GET "/api/v1/users/$OP/groups"
check_ok "the operator's groups are [A]" 200 '.data == [$ENV.GA]'
call "$ADM" POST "/api/v1/users/$OP/groups" "{\"group_ids\": [\"$GB\"]}"
check_ok "add group B to the operator" 200 '(.data | sort) == ([$ENV.GA, $ENV.GB] | sort)'
call "$OPT" GET "/api/v1/devices/$D2"
check_ok "the operator now reads group B's device with the same token" 200 '.data.id == $ENV.D2'
call "$ADM" DELETE "/api/v1/users/$OP/groups" "{\"group_ids\": [\"$GA\"]}"
check_ok "remove group A from the operator" 200 '.data == [$ENV.GB]'
call "$OPT" GET "/api/v1/devices/$D1"
check_error "the operator no longer sees group A's device" 404 NOT_FOUND
call "$ADM" PUT "/api/v1/users/$OP/groups" "{\"group_ids\": [\"$GA\"]}"
check_ok "replace the operator's groups with [A]" 200 '.data == [$ENV.GA]'
call "$OPT" GET "/api/v1/devices?per_page=1000"
check_eq "the operator is back to group A's devices" "$(ids)" "$(sorted "$D1" "$D7")"
call "$ADM" POST "/api/v1/users/$OP/groups" '{"group_ids": ["1"]}'
check_error "scoping a user to an unknown group answers 404 naming group_ids[0]" 404 NOT_FOUND 'group_ids[0]'
call "$ADM" POST "/api/v1/users/$OP/groups" '{"group_ids": ["x"]}'
check_error "a malformed group id answers 400 naming group_ids[0]" 400 INVALID_ARGUMENT 'group_ids[0]'

# Password and role changes; deletion.
TMP_USER="sh-tmp-$RUN"
call "$ADM" POST /api/v1/users "{\"username\": \"$TMP_USER\", \"password\": \"tmp-pass-1\", \"role\": \"viewer\"}"
check_ok "create a throw-away viewer" 201 '.data.groups == []'
export TMPU
TMPU=$(jval '.data.id')
login "$TMP_USER" tmp-pass-1
TMPT=$LOGIN_TOKEN
call "$TMPT" GET /api/v1/devices
check_ok "a viewer with no group sees no devices" 200 '.data.total == 0'
call "$TMPT" PATCH "/api/v1/users/$TMPU" '{"role": "admin"}'
check_error "a user cannot change their own role (403)" 403 PERMISSION_DENIED
call "$TMPT" PATCH "/api/v1/users/$TMPU" '{"password": "short"}'
check_error "a too-short new password answers 400 naming password" 400 INVALID_ARGUMENT password
call "$TMPT" PATCH "/api/v1/users/$TMPU" '{"password": "tmp-pass-2"}'
check_error "changing one's own password without current_password answers 400 naming it" 400 INVALID_ARGUMENT current_password
call "$TMPT" PATCH "/api/v1/users/$TMPU" '{"password": "tmp-pass-2", "current_password": "not-my-pass"}'
check_error "a wrong current_password answers 400 naming it" 400 INVALID_ARGUMENT current_password
call "$TMPT" PATCH "/api/v1/users/$TMPU" '{"password": "tmp-pass-2", "current_password": "tmp-pass-1"}'
check_ok "a user changes their own password, giving the current one" 200 '.data.id == $ENV.TMPU'
call "$TMPT" GET "/api/v1/users/$TMPU"
check_error "tokens issued before the password change stop working (401)" 401 UNAUTHENTICATED
login "$TMP_USER" tmp-pass-1
check_error "the old password no longer logs in" 401 UNAUTHENTICATED
login "$TMP_USER" tmp-pass-2
check_ok "the new password logs in" 200
TMPT=$LOGIN_TOKEN
call "$ADM" PATCH "/api/v1/users/$TMPU" '{"role": "operator"}'
check_ok "the admin changes the user's role" 200 '.data.role == "operator"'
call "$TMPT" GET "/api/v1/users/$TMPU"
check_error "tokens issued before the role change stop working (401)" 401 UNAUTHENTICATED
call "$ADM" DELETE "/api/v1/users/$TMPU"
check_ok "delete the throw-away user" 200 '.data.id == $ENV.TMPU'
call "$ADM" GET "/api/v1/users/$TMPU"
check_error "a deleted user answers 404" 404 NOT_FOUND
login "$TMP_USER" tmp-pass-2
check_error "a deleted user cannot log in" 401 UNAUTHENTICATED
call "$ADM" DELETE "/api/v1/users/$TMPU"
check_error "deleting a user again answers 404" 404 NOT_FOUND

# -----------------------------------------------------------------------------
section "group memberships"

call "$ADM" GET "/api/v1/groups/$GA"
check_ok "group A counts its 2 devices" 200 '.data.devices == 2'
call "$ADM" GET "/api/v1/groups/$GA/devices"
check_eq "group A's devices are 1 and 7" "$(ids)" "$(sorted "$D1" "$D7")"
call "$ADM" POST "/api/v1/groups/$GC/devices" \
    "{\"device_ids\": [\"$D1\", \"$D2\", \"$D3\", \"$D4\", \"$D5\"]}"
check_ok "bulk-add five devices to group C" 200 '.data == {changed: 5, devices: 5}'
call "$ADM" POST "/api/v1/groups/$GC/devices" \
    "{\"device_ids\": [\"$D1\", \"$D2\", \"$D3\", \"$D4\", \"$D5\", \"$D1\"]}"
check_ok "adding them again changes nothing" 200 '.data == {changed: 0, devices: 5}'
call "$ADM" GET "/api/v1/groups/$GC/devices?type=gateway"
check_eq "group members filter like the device list" "$(ids)" "$(sorted "$D1" "$D2")"
call "$ADM" GET "/api/v1/groups/$GC/devices?per_page=2"
check_ok "group members paginate" 200 '.data.items | length == 2' '.data.total == 5'
call "$ADM" DELETE "/api/v1/groups/$GC/devices" "{\"device_ids\": [\"$D4\", \"$D5\"]}"
check_ok "bulk-remove two devices from group C" 200 '.data == {changed: 2, devices: 3}'
call "$ADM" PUT "/api/v1/groups/$GC/devices" "{\"device_ids\": [\"$D3\", \"$D4\"]}"
check_ok "replace group C's members with devices 3 and 4" 200 '.data == {changed: 3, devices: 2}'
call "$ADM" GET "/api/v1/groups/$GC/devices"
check_eq "group C now holds exactly devices 3 and 4" "$(ids)" "$(sorted "$D3" "$D4")"
call "$ADM" POST "/api/v1/groups/$GC/devices" "{\"device_ids\": [\"$D5\", \"1\"]}"
check_error "an unknown device answers 404 naming device_ids[1]" 404 NOT_FOUND 'device_ids[1]'
call "$ADM" GET "/api/v1/groups/$GC"
check_ok "a refused bulk add changes nothing" 200 '.data.devices == 2'
call "$ADM" PUT "/api/v1/groups/$GC/devices" '{"device_ids": ["x"]}'
check_error "a malformed device id answers 400 naming device_ids[0]" 400 INVALID_ARGUMENT 'device_ids[0]'
call "$ADM" POST /api/v1/groups/1/devices "{\"device_ids\": [\"$D1\"]}"
check_error "adding to an unknown group answers 404" 404 NOT_FOUND

call "$ADM" GET "/api/v1/devices/$D3/groups"
check_ok "device 3 is in group C" 200 '.data == [$ENV.GC]'
call "$ADM" POST "/api/v1/devices/$D3/groups" "{\"group_ids\": [\"$GA\", \"$GB\"]}"
check_ok "put device 3 in groups A and B too" 200 \
    '(.data | sort) == ([$ENV.GA, $ENV.GB, $ENV.GC] | sort)'
call "$ADM" DELETE "/api/v1/devices/$D3/groups" "{\"group_ids\": [\"$GB\"]}"
check_ok "take device 3 out of group B" 200 '(.data | sort) == ([$ENV.GA, $ENV.GC] | sort)'
call "$ADM" GET "/api/v1/groups/$GA/devices"
check_eq "group A sees device 3 from the other direction" "$(ids)" "$(sorted "$D1" "$D3" "$D7")"
call "$OPT" GET "/api/v1/devices/$D3"
check_ok "the group A operator now sees device 3" 200 '.data.id == $ENV.D3'
call "$ADM" POST "/api/v1/devices/$D3/groups" '{"group_ids": ["1"]}'
check_error "joining an unknown group answers 404 naming group_ids[0]" 404 NOT_FOUND 'group_ids[0]'
call "$OPT" POST "/api/v1/devices/$D1/groups" "{\"group_ids\": [\"$GB\"]}"
check_error "an operator cannot put a device in someone else's group (404)" 404 NOT_FOUND 'group_ids[0]'

call "$ADM" DELETE "/api/v1/groups/$GC"
check_ok "delete group C" 200 '.data.id == $ENV.GC'
call "$ADM" GET "/api/v1/groups/$GC"
check_error "a deleted group answers 404" 404 NOT_FOUND
call "$ADM" PATCH "/api/v1/groups/$GC" '{"description": "x"}'
check_error "patching a deleted group answers 404" 404 NOT_FOUND
call "$ADM" GET "/api/v1/devices/$D3/groups"
check_ok "device 3 survives its group's deletion, out of it" 200 '.data == [$ENV.GA]'
call "$ADM" POST /api/v1/groups "{\"name\": \"sh-c2-$RUN\"}"
check_ok "a deleted group's name can be used again" 201
GC2=$(jval '.data.id')
call "$ADM" DELETE "/api/v1/groups/$GC2"
check_ok "delete the reused-name group" 200

# -----------------------------------------------------------------------------
section "edges: homed devices"

call "$ADM" DELETE "/api/v1/edges/$EDGE"
check_error "deleting an edge with a homed device answers 409 FAILED_PRECONDITION" 409 FAILED_PRECONDITION
call "$ADM" GET "/api/v1/edges/$EDGE"
check_ok "the edge is still there" 200
call "$ADM" PATCH "/api/v1/devices/$D2" "{\"edge_id\": \"$EDGE\"}"
check_ok "home device 2 at the edge too" 200 '.data.edge_id == $ENV.EDGE'
call "$ADM" GET "/api/v1/devices?edge=$EDGE"
check_eq "the edge filter lists both homed devices" "$(ids)" "$(sorted "$D1" "$D2")"
call "$ADM" PATCH "/api/v1/devices/$D1" '{"edge_id": null}'
check_ok "unassign device 1 (edge_id null)" 200 '.data.edge_id == null'
call "$ADM" DELETE "/api/v1/devices/$D2"
check_ok "delete device 2 (the last homed device)" 200
call "$ADM" DELETE "/api/v1/edges/$EDGE"
check_ok "the edge can be deleted once no live device is homed there" 200 '.data.id == $ENV.EDGE'
call "$ADM" GET "/api/v1/edges/$EDGE"
check_error "a deleted edge answers 404" 404 NOT_FOUND
call "$ADM" DELETE "/api/v1/edges/$EDGE"
check_error "deleting an edge again answers 404" 404 NOT_FOUND
call "$ADM" POST "/api/v1/edges/$EDGE/secret"
check_error "rotating a deleted edge's secret answers 404" 404 NOT_FOUND

# -----------------------------------------------------------------------------
section "CSV export and import"

call "$ADM" GET "/api/v1/devices?model=$MODEL&per_page=1000"
LISTED=$(ids)
call "$ADM" GET "/api/v1/devices/export?model=$MODEL"
check "export answers 200" 200
check_true "export is text/csv" grep -qi '^text/csv' <<<"$(header content-type)"
CSV=$(tr -d '\r' <<<"$BODY")
check_eq "export's header line is exact" "$(head -n 1 <<<"$CSV")" "$CSV_HEADER"
check_eq "export holds the listed devices, one line each" \
    "$(tail -n +2 <<<"$CSV" | cut -d, -f1 | sort | paste -sd, -)" "$LISTED"
check_eq "export joins several NICs with ';'" "$(grep "^$D4," <<<"$CSV")" \
    "$D4,sh-sensor-4-$RUN,sensor,$MODEL,S4-$RUN,1.0.0,2024-01-01,eth;wifi,02:00:00:00:00:04;02-00-00-00-01-04,10.0.0.4;10.0.1.4,offline"
call "$ADM" GET "/api/v1/devices/export?model=$MODEL&type=camera"
check_eq "export applies the list filters" \
    "$(tr -d '\r' <<<"$BODY" | tail -n +2 | cut -d, -f1 | paste -sd, -)" "$D5"
call "" GET /api/v1/devices/export
check_error "export without a token answers 401" 401 UNAUTHENTICATED

export IMPORT_ID="$RUN"
IMPORT_CSV="$CSV_HEADER
,sh-imp-1-$RUN,sensor,$MODEL,I1-$RUN,1.0,2024-02-02,eth,02:00:00:00:10:01,10.1.0.1,online
,sh-imp-2-$RUN,sensor,$MODEL,I2-$RUN,1.0,,eth;wifi,02:00:00:00:10:02;02:00:00:00:10:03,10.1.0.2;10.1.0.3,offline
,sh-imp-bad-mac-$RUN,sensor,$MODEL,I3-$RUN,1.0,,eth,zz:00:00:00:10:04,10.1.0.4,online
,sh-imp-dup-$RUN,sensor,$MODEL,I1-$RUN,1.0,,eth,02:00:00:00:10:05,10.1.0.5,online
,too,few,columns
,,sensor,$MODEL,I6-$RUN,1.0,,,,,online
,sh-imp-bad-ip-$RUN,sensor,$MODEL,I7-$RUN,1.0,,eth,02:00:00:00:10:07,10.1.0.256,online
$IMPORT_ID,sh-imp-id-$RUN,sensor,$MODEL,I8-$RUN,1.0,,,,,online
$(grep "^$D4," <<<"$CSV")
"
call "$ADM" POST /api/v1/devices/import "$IMPORT_CSV" text/csv
check_ok "import answers 200 with a report" 200 '.data.created == 3' '.data.rejected == 6' \
    '.data.lines | length == 9'
check "import reports each line by number and outcome" 200 \
    '[.data.lines[] | [.line, .outcome]] == [[2,"created"],[3,"created"],[4,"rejected"],[5,"rejected"],[6,"rejected"],[7,"rejected"],[8,"rejected"],[9,"created"],[10,"rejected"]]'
check "created lines carry the new id" 200 \
    '[.data.lines[] | select(.outcome == "created") | .id | test("^[0-9]+$")] == [true, true, true]'
check "rejected lines name the field" 200 \
    '[.data.lines[] | select(.outcome == "rejected") | .field] == ["nic[0].mac", "hardware.sn", "line", "name", "nic[0].ipv4", "hardware.sn"]' \
    '[.data.lines[] | select(.outcome == "rejected") | .error | type == "string" and length > 0] | all'
check "an id given in the CSV is kept" 200 '.data.lines[7].id == $ENV.IMPORT_ID'
export IMP2
IMP2=$(jval '.data.lines[1].id')
call "$ADM" GET "/api/v1/devices/$IMP2"
check_ok "an imported device splits ';'-joined NICs" 200 ".data.name == \"sh-imp-2-$RUN\"" \
    '.data.nic == [{type: "eth", mac: "02:00:00:00:10:02", ipv4: "10.1.0.2"}, {type: "wifi", mac: "02:00:00:00:10:03", ipv4: "10.1.0.3"}]' \
    '.data.status == "offline"'
call "$ADM" GET "/api/v1/devices/$IMPORT_ID"
check_ok "the device imported with an id answers under it" 200 ".data.name == \"sh-imp-id-$RUN\""
call "$ADM" GET "/api/v1/devices?model=$MODEL&name=sh-imp-"
check_ok "rejected import lines left nothing behind" 200 '.data.total == 3'

call "$ADM" POST "/api/v1/devices/import?group=$GB" \
    ",sh-imp-g-$RUN,sensor,$MODEL,I9-$RUN,1.0,,,,,online" text/csv
check_ok "import without a header line, into group B" 200 '.data.created == 1' '.data.rejected == 0'
export IMPG
IMPG=$(jval '.data.lines[0].id')
call "$ADM" GET "/api/v1/devices/$IMPG/groups"
check_ok "the ?group= import option places devices in the group" 200 '.data == [$ENV.GB]'
call "$OPT" POST /api/v1/devices/import ",sh-imp-op-$RUN,sensor,$MODEL,I10-$RUN,1.0,,,,,online" text/csv
check_ok "an operator's import without a group rejects the line naming groups" 200 \
    '.data.created == 0' '.data.rejected == 1' '.data.lines[0].field == "groups"'
call "$OPT" POST "/api/v1/devices/import?group=$GA" ",sh-imp-op-$RUN,sensor,$MODEL,I10-$RUN,1.0,,,,,online" text/csv
check_ok "an operator imports into their own group" 200 '.data.created == 1'

# -----------------------------------------------------------------------------
section "seed lab contract /v1/devices"

LAB_DEVICE=$(jq -cn --arg m "$MODEL" --arg s "L1-$RUN" --arg n "sh-lab-1-$RUN" \
    '{name: $n, type: "gateway", hardware: {model: $m, sn: $s},
      software: {version: "0.1", "last update": "2023-01-01"},
      nic: [{type: "wifi", mac: "12:34:56:78:9a:bc", ipv4: "192.168.1.2"}], status: "online"}')
call "$ADM" POST /v1/devices "$LAB_DEVICE"
check_ok "POST /v1/devices answers 200 with the new id as data" 200 '.data | type == "string"' \
    '.data | test("^[0-9]+$")'
export L1
L1=$(jval '.data')
call "$ADM" POST /v1/devices "$(devjson "sh-lab-2-$RUN" gateway "L2-$RUN" online)"
check_ok "POST /v1/devices a second device" 200
export L2
L2=$(jval '.data')
call "$ADM" POST /v1/devices "$(devjson "sh-lab-3-$RUN" gateway "L3-$RUN" online)"
check_ok "POST /v1/devices a third device" 200
export L3
L3=$(jval '.data')
call "$ADM" POST /v1/devices "$LAB_DEVICE"
check_error "POST /v1/devices duplicate (model, sn) answers 409 naming hardware.sn" 409 \
    ALREADY_EXISTS hardware.sn
call "$ADM" POST /v1/devices "$(devjson "sh-lab-bad-$RUN" gateway "L4-$RUN" online \
    '{"nic": [{"type": "wifi", "mac": "12:34:56:78:9a:bcd"}]}')"
check_error "POST /v1/devices bad MAC answers 400 naming nic[0].mac" 400 INVALID_ARGUMENT 'nic[0].mac'

call "$ADM" GET /v1/devices "{\"id\": \"$L1\"}"
check_ok "GET /v1/devices with body {id}" 200 '.data | length == 1' '.data[0].id == $ENV.L1' \
    '.data[0].software == {version: "0.1", last_update: "2023-01-01"}' \
    '.data[0].nic == [{type: "wifi", mac: "12:34:56:78:9a:bc", ipv4: "192.168.1.2"}]'
call "$ADM" GET /v1/devices "{\"sn\": \"L1-$RUN\", \"model\": \"$MODEL\"}"
check_ok "GET /v1/devices with body {sn, model}" 200 '[.data[].id] == [$ENV.L1]'
call "$ADM" GET "/v1/devices?sn=L2-$RUN&model=$MODEL"
check_ok "GET /v1/devices with query sn and model" 200 '[.data[].id] == [$ENV.L2]'
call "$ADM" GET "/v1/devices?id=$L3"
check_ok "GET /v1/devices with query id" 200 '[.data[].id] == [$ENV.L3]'
call "$ADM" GET /v1/devices '{"id": "1"}'
check_ok "GET /v1/devices of an unknown id answers an empty list" 200 '.data == []'
call "$ADM" GET /v1/devices "{\"sn\": \"L1-$RUN\"}"
check_ok "GET /v1/devices with sn alone finds it" 200 '[.data[].id] == [$ENV.L1]'
part=${MODEL#sh-}
call "$ADM" GET /v1/devices "{\"model\": \"${part^^}\"}"
check_ok "GET /v1/devices with part of a model, in another case, finds every device of it" 200 \
    '[.data[].id] | contains([$ENV.L1, $ENV.L2, $ENV.L3])' ".data | all(.hardware.model == \"$MODEL\")"
call "$ADM" GET /v1/devices '{"model": " "}'
check_error "GET /v1/devices with an empty model answers 400 naming model" 400 INVALID_ARGUMENT model
call "$ADM" GET /v1/devices
check_error "GET /v1/devices with nothing answers 400 naming id" 400 INVALID_ARGUMENT id
call "$ADM" GET /v1/devices '{"id": "abc"}'
check_error "GET /v1/devices with a malformed id answers 400 naming id" 400 INVALID_ARGUMENT id

call "$ADM" PUT /v1/devices "{\"id\": \"$L1\", \"status\": \"offline\", \"software\": {\"version\": \"0.2\"}}"
check_ok "PUT /v1/devices updates some fields" 200 '.data.id == $ENV.L1' '.data.status == "offline"' \
    '.data.software == {version: "0.2", last_update: "2023-01-01"}' ".data.name == \"sh-lab-1-$RUN\"" \
    '.data.nic | length == 1'
call "$ADM" GET "/api/v1/devices/$L1"
check_ok "the PUT is visible on the REST API" 200 '.data.status == "offline"' '.data.software.version == "0.2"'
call "$ADM" PUT /v1/devices '{"id": "1", "status": "offline"}'
check_error "PUT /v1/devices of an unknown id answers 404" 404 NOT_FOUND
call "$ADM" PUT /v1/devices '{"status": "offline"}'
check_error "PUT /v1/devices without id answers 400 naming id" 400 INVALID_ARGUMENT id
call "$ADM" PUT /v1/devices "{\"id\": \"$L1\", \"nic\": [{\"type\": \"eth\", \"ipv4\": \"1.2.3.4.5\"}]}"
check_error "PUT /v1/devices with a bad IPv4 answers 400 naming nic[0].ipv4" 400 INVALID_ARGUMENT 'nic[0].ipv4'
call "$ADM" PUT /v1/devices "{\"id\": \"$L1\", \"hardware\": {\"sn\": \"L2-$RUN\"}}"
check_error "PUT /v1/devices onto another (model, sn) answers 409 naming hardware.sn" 409 \
    ALREADY_EXISTS hardware.sn

call "$ADM" DELETE /v1/devices "{\"ids\": [\"$L1\", \" $L2 \", \"1\", \"1234567890\"]}"
check "DELETE /v1/devices answers the ids actually deleted" 200 '.status == 200' \
    '.data.ids == [$ENV.L1, $ENV.L2]' '.ids == [$ENV.L1, $ENV.L2]'
call "$ADM" GET /v1/devices "{\"id\": \"$L1\"}"
check_ok "a device deleted through /v1/devices is gone" 200 '.data == []'
call "$ADM" GET "/api/v1/devices/$L2"
check_error "the trimmed id was deleted too" 404 NOT_FOUND
call "$ADM" GET "/api/v1/devices/$L3"
check_ok "a device not named in the delete stays" 200 '.data.id == $ENV.L3'
call "$ADM" DELETE /v1/devices "{\"ids\": [\"$L1\"]}"
check "DELETE /v1/devices of already deleted ids answers none" 200 '.data.ids == []' '.ids == []'
call "$ADM" DELETE /v1/devices '{"ids": ["x"]}'
check_error "DELETE /v1/devices with a malformed id answers 400 naming ids[0]" 400 INVALID_ARGUMENT 'ids[0]'
call "$ADM" DELETE /v1/devices '{}'
check_error "DELETE /v1/devices without ids answers 400 naming ids" 400 INVALID_ARGUMENT ids
call "$OPT" DELETE /v1/devices "{\"ids\": [\"$L3\"]}"
check "an operator's /v1/devices delete skips devices outside their scope" 200 '.data.ids == []'
call "" GET /v1/devices "{\"id\": \"$L3\"}"
check_error "/v1/devices without a token answers 401" 401 UNAUTHENTICATED

# -----------------------------------------------------------------------------
section "events"

call "$ADM" GET "/api/v1/events?actor=$OP_USER&per_page=1000"
check_ok "events by actor list the operator's actions" 200 '.data.total > 0' \
    '[.data.items[].actor] | all(. == "'"$OP_USER"'")' \
    '[.data.items[] | select(.action == "POST /api/v1/devices" and .outcome == "ok" and .status_code == 201)] | length == 1' \
    '[.data.items[] | select(.action == "PATCH /api/v1/devices/{id}" and .target_id == $ENV.D1 and .outcome == "ok")] | length == 1' \
    '[.data.items[] | select(.action == "POST /api/v1/groups" and .status_code == 403 and .outcome == "error")] | length == 1'
check "events are newest first" 200 '[.data.items[].at] as $a | $a == ($a | sort | reverse)'
check "reads are not recorded" 200 '[.data.items[].action | startswith("GET ")] | any | not'
call "$ADM" GET "/api/v1/events?actor=$OP_USER&outcome=error&per_page=1000"
check_ok "events by outcome" 200 '.data.total > 0' '[.data.items[].outcome] | all(. == "error")' \
    '[.data.items[].status_code] | all(. >= 400)' '[.data.items[].detail | length > 0] | all'
call "$ADM" GET "/api/v1/events?target_type=devices&target_id=$D3&per_page=1000"
check_ok "events by target list device 3's history" 200 \
    '[.data.items[].target_id] | all(. == $ENV.D3)' '[.data.items[].target_type] | all(. == "devices")' \
    '[.data.items[] | select(.action == "PATCH /api/v1/devices/{id}")] | length == 5' \
    '[.data.items[] | select(.action == "POST /api/v1/devices/{id}/groups")] | length >= 1'
call "$ADM" GET "/api/v1/events?actor=nobody-$RUN"
check_ok "failed logins as unknown names are not recorded (metrics count them)" 200 '.data.total == 0'
call "$ADM" GET "/api/v1/events?actor=$CENTER_ADMIN_USER&action=auth/login&outcome=error"
check_ok "a known account's failed login is recorded" 200 '.data.total >= 1' \
    '.data.items[0].action == "POST /api/v1/auth/login"' '.data.items[0].status_code == 401' \
    '.data.items[0].target_type == "auth"'
call "$ADM" GET "/api/v1/events?target_type=devices&target_id=$L1,$L2"
check_ok "the seed contract's delete is recorded with the deleted ids" 200 '.data.total == 1' \
    '.data.items[0].action == "DELETE /v1/devices"' ".data.items[0].actor == \"$CENTER_ADMIN_USER\"" \
    '.data.items[0].outcome == "ok"'
call "$ADM" GET "/api/v1/events?actor=$OP_USER&per_page=2&page=2"
check_ok "events paginate" 200 '.data.items | length == 2' '.data.page == 2'
call "$ADM" GET "/api/v1/events?outcome=maybe"
check_error "an unknown outcome answers 400 naming outcome" 400 INVALID_ARGUMENT outcome
call "$VWT" GET "/api/v1/events?per_page=1000"
check_ok "a viewer sees only their own events" 200 '.data.total > 0' \
    '[.data.items[].actor] | all(. == "'"$VW_USER"'")'

# -----------------------------------------------------------------------------
section "artifacts"

ART_BODY="firmware image $RUN $(printf 'x%.0s' {1..200})"
ART_SHA=$(printf '%s' "$ART_BODY" | sha256sum | cut -d' ' -f1)
ART_Q="name=sh-firmware&version=1.0.$RUN&models=GW-1,GW-2"
export ART_SHA
call "$OPT" POST "/api/v1/artifacts?$ART_Q" "$ART_BODY" application/octet-stream
check_ok "an operator uploads an artifact" 201 ".data.sha256 == \"$ART_SHA\"" \
    ".data.size == ${#ART_BODY}" '.data.models == ["GW-1","GW-2"]' \
    '.data.manifest | fromjson | .sha256 == $ENV.ART_SHA' '.data.signature | length > 40'
ART=$(jval .data.id)
export ART
call "$ADM" POST "/api/v1/artifacts?$ART_Q" "$ART_BODY" application/octet-stream
check_error "the same name and version again is refused" 409 ALREADY_EXISTS version
call "$ADM" POST "/api/v1/artifacts?version=1" "$ART_BODY" application/octet-stream
check_error "an upload without a name is refused by field" 400 INVALID_ARGUMENT name
call "$ADM" POST "/api/v1/artifacts?name=a&version=1" '{}'
check_error "an upload that is not octet-stream is refused" 400 INVALID_ARGUMENT content-type
call "$VWT" POST "/api/v1/artifacts?name=v&version=1" "$ART_BODY" application/octet-stream
check_error "a viewer cannot upload" 403 PERMISSION_DENIED
call "$VWT" GET "/api/v1/artifacts/$ART"
check_ok "a viewer reads the artifact" 200 '.data.id == $ENV.ART'
call "$ADM" GET "/api/v1/artifacts?name=sh-firmware"
check_ok "the artifact is listed by name" 200 'any(.data.items[]; .id == $ENV.ART)'
call "$VWT" GET /api/v1/artifacts/signing-key
check_ok "the signing key is published" 200 '.data.algorithm == "ed25519"' \
    '.data.public_key | length == 44'
call "$ADM" GET "/api/v1/artifacts/$ART/content"
check_eq "the download is the uploaded file" "$(printf '%s' "$BODY" | sha256sum | cut -d' ' -f1)" "$ART_SHA"
call_h "Range: bytes=0-13" "$ADM" GET "/api/v1/artifacts/$ART/content"
check_eq "a range is answered 206" "$STATUS" 206
check_eq "the range is the file's first bytes" "$BODY" "firmware image"
check_eq "the range says where it is" "$(header content-range)" "bytes 0-13/${#ART_BODY}"
call_h "Range: bytes=${#ART_BODY}-" "$ADM" GET "/api/v1/artifacts/$ART/content"
check_eq "a range past the end is 416" "$STATUS" 416

# -----------------------------------------------------------------------------
section "rollouts"

call "$ADM" POST /api/v1/edges "{\"name\": \"sh-ro-edge-$RUN\", \"site\": \"ro-$RUN\"}"
check "an edge for the rollout's device is registered" 201
export RO_EDGE
RO_EDGE=$(jval .data.id)
call "$ADM" POST /api/v1/devices "$(devjson "sh-ro-$RUN" gateway "SRO-$RUN" online "{\"edge_id\": \"$RO_EDGE\"}")"
check "a device homed at the edge is registered" 201
export RO_DEV
RO_DEV=$(jval .data.id)
ro_body() { # ARTIFACT [EXTRA_JSON]
    local extra='{}'
    if (($# >= 2)); then extra=$2; fi
    jq -cn --arg a "$1" --arg d "$RO_DEV" --argjson x "$extra" \
        '{name: "sh rollout", artifact_id: $a, target: {device_ids: [$d]},
          waves: ["50%", "100%"], start_at: 4102444800000} + $x'
}
call "$ADM" POST /api/v1/rollouts "$(ro_body "$ART")"
check_error "a device of a model the artifact is not for is refused" 400 INVALID_ARGUMENT target.device_ids
call "$ADM" POST "/api/v1/artifacts?name=sh-any&version=1.$RUN" "$ART_BODY" application/octet-stream
check "an artifact for any model is uploaded" 201
export ART2
ART2=$(jval .data.id)
call "$ADM" POST /api/v1/rollouts "$(ro_body "$ART2" '{"waves": ["0%"]}')"
check_error "a wave of 0% is refused by field" 400 INVALID_ARGUMENT waves
call "$ADM" POST /api/v1/rollouts "$(ro_body "$ART2" '{"target": {}}')"
check_error "a target naming nothing is refused" 400 INVALID_ARGUMENT target
call "$ADM" POST /api/v1/rollouts "$(ro_body 123456789)"
check_error "an unknown artifact answers 404 naming artifact_id" 404 NOT_FOUND artifact_id
call "$VWT" POST /api/v1/rollouts "$(ro_body "$ART2")"
check_error "a viewer cannot make a rollout" 403 PERMISSION_DENIED
call "$ADM" POST /api/v1/rollouts "$(ro_body "$ART2")"
check_ok "a rollout for later is made, scheduled" 201 '.data.state == "scheduled"' \
    '.data.counts.total == 1' '.data.counts.queued == 1' '.data.waves == ["50%","100%"]' \
    '.data.wave == 1' '.data.per_edge[0].edge_id == $ENV.RO_EDGE'
export RO
RO=$(jval .data.id)
call "$ADM" GET "/api/v1/rollouts/$RO"
check_ok "the rollout is read back" 200 '.data.id == $ENV.RO' '.data.artifact_id == $ENV.ART2'
call "$ADM" GET /api/v1/rollouts
check_ok "the rollout is listed" 200 'any(.data.items[]; .id == $ENV.RO)'
call "$ADM" GET "/api/v1/rollouts/$RO/devices"
check_ok "its device waits, queued" 200 '.data.total == 1' \
    '.data.items[0].device_id == $ENV.RO_DEV' '.data.items[0].state == "queued"'
call "$ADM" GET "/api/v1/rollouts/$RO/devices?state=nope"
check_error "an unknown device state is refused by field" 400 INVALID_ARGUMENT state
call "$ADM" POST "/api/v1/rollouts/$RO/pause"
check_ok "pause" 200 '.data.state == "paused"' '.data.reason | startswith("paused by")'
call "$ADM" POST "/api/v1/rollouts/$RO/resume"
check_ok "resume before its start is scheduled again" 200 '.data.state == "scheduled"'
call "$ADM" DELETE "/api/v1/artifacts/$ART2"
check_error "an artifact a live rollout installs is not deleted" 409 FAILED_PRECONDITION
call "$ADM" POST "/api/v1/rollouts/$RO/abort"
check_ok "abort" 200 '.data.state == "aborted"'
call "$ADM" POST "/api/v1/rollouts/$RO/resume"
check_error "an aborted rollout stays aborted" 409 FAILED_PRECONDITION
call "$ADM" DELETE "/api/v1/artifacts/$ART2"
check_ok "the artifact of an aborted rollout is deleted" 200 '.data.id == $ENV.ART2'
call "$ADM" GET /api/v1/rollouts/1
check_error "an unknown rollout answers 404" 404 NOT_FOUND
call "$ADM" DELETE "/api/v1/devices/$RO_DEV"
check "the rollout's device is deleted" 200
call "$ADM" DELETE "/api/v1/edges/$RO_EDGE"
check "the rollout's edge is deleted" 200

call "$OPT" DELETE "/api/v1/artifacts/$ART"
check_error "an operator cannot delete an artifact" 403 PERMISSION_DENIED
call "$ADM" DELETE "/api/v1/artifacts/$ART"
check_ok "an admin deletes it" 200 '.data.id == $ENV.ART'
call "$ADM" GET "/api/v1/artifacts/$ART/content"
check_error "a deleted artifact is gone" 404 NOT_FOUND

# -----------------------------------------------------------------------------
section "router errors"

call "$ADM" GET /api/v1/nosuchthing
check_error "an unknown route answers a 404 envelope" 404 NOT_FOUND
call "" GET "/nope-$RUN"
check_error "an unknown route needs no token to answer 404" 404 NOT_FOUND
call "$ADM" PATCH /api/v1/devices '{}'
check "a wrong method answers 405 in the envelope" 405 '.status == 405' '.code | type == "string"' \
    '.data == null'
call "$ADM" POST /api/v1/devices '{"name": "x"'
check_error "truncated JSON answers 400 naming body" 400 INVALID_ARGUMENT body
call "$ADM" POST /api/v1/devices '{"name" "x"}'
check_error "JSON missing a colon answers 400 naming body" 400 INVALID_ARGUMENT body
call "$ADM" POST /api/v1/devices "$(devjson "sh-trail-$RUN" gateway "T1-$RUN" online) x"
check_error "trailing characters after the JSON answer 400 naming body" 400 INVALID_ARGUMENT body
call "$ADM" POST /api/v1/groups ""
check_error "an empty body answers 400 naming body" 400 INVALID_ARGUMENT body
BIG=$(head -c "$((CENTER_BODY_LIMIT + 4096))" /dev/zero | tr '\0' 'a')
call "$ADM" POST /api/v1/groups "{\"name\": \"$BIG\"}"
unset BIG
check_error "a body over the limit answers 413 PAYLOAD_TOO_LARGE" 413 PAYLOAD_TOO_LARGE

call "" GET /metrics
check_true "metrics label requests by route pattern" \
    grep -q 'route="/api/v1/devices/{id}"' <<<"$BODY"
check_true "metrics never label by raw id" test "$(grep -c "$D1" <<<"$BODY")" -eq 0
check_true "metrics count unauthenticated requests instead of recording them" \
    grep -q '^http_unrecorded_requests_total{class="devices",outcome="unauthenticated"} ' <<<"$BODY"
check_true "metrics count password checks by outcome" \
    grep -q '^operator_logins_total{outcome="failed"} ' <<<"$BODY"

# -----------------------------------------------------------------------------
section "clean up this run's accounts"

call "$ADM" DELETE "/api/v1/users/$OP"
check_ok "delete the operator" 200 '.data.id == $ENV.OP'
call "$OPT" GET /api/v1/devices
check_error "a deleted account's token stops working" 401 UNAUTHENTICATED
call "$ADM" DELETE "/api/v1/users/$VW"
check_ok "delete the viewer" 200 '.data.id == $ENV.VW'
login "$VW_USER" "$VW_PASS"
check_error "a deleted viewer cannot log in" 401 UNAUTHENTICATED
call "$ADM" GET "/api/v1/groups/$GA"
check_ok "deleting users leaves their groups" 200 '.data.id == $ENV.GA'

summary
