#!/usr/bin/env bash
# jq filters below read shell values through $ENV, so single quotes are intended.
# shellcheck disable=SC2016 source-path=SCRIPTDIR
# End-to-end walk through the site API of a running edge, with curl and jq, and
# (optionally) through a real device agent connected to it. Each check prints
# "ok   - ..." or "FAIL - ... (details)"; the last line is "N passed, M failed" and
# the exit status is non-zero when anything failed.
#
#   EDGE_URL             default https://127.0.0.1:9443
#   EDGE_CA              CA file to trust (the dev CA is DATA_DIR/tls/ca.crt);
#                        empty: curl's default trust store
#   EDGE_ADMIN_USER      default admin
#   EDGE_ADMIN_PASSWORD  required
#   EDGE_CURL_TIMEOUT    seconds per request (default 60)
#   EDGE_DEVICE_URL      the device endpoint, e.g. wss://localhost:9444/devices
#   AGENT_BIN            path of the device-agent binary
#   EDGE_ID              the edge's id when it is linked to a center (the devices it
#                        registers are homed there); unset for a standalone edge
#
# The device agent part runs only when EDGE_DEVICE_URL, AGENT_BIN and EDGE_CA are all
# set: it registers a device, runs `AGENT_BIN run` for it in the background (killed
# when the script exits, however it exits) and drives it through the site API.
#
# Every name and serial number carries a per-run suffix, so the suite can run again
# and again against the same edge.

EDGE_URL=${EDGE_URL:-https://127.0.0.1:9443}
EDGE_CA=${EDGE_CA:-}
EDGE_ADMIN_USER=${EDGE_ADMIN_USER:-admin}
EDGE_ADMIN_PASSWORD=${EDGE_ADMIN_PASSWORD:-}
EDGE_DEVICE_URL=${EDGE_DEVICE_URL:-}
AGENT_BIN=${AGENT_BIN:-}

# lib.sh speaks to "the center"; here that is the edge's site API.
CENTER_URL=$EDGE_URL
CENTER_CA=$EDGE_CA
CENTER_ADMIN_USER=$EDGE_ADMIN_USER
CENTER_ADMIN_PASSWORD=$EDGE_ADMIN_PASSWORD
CENTER_CURL_TIMEOUT=${EDGE_CURL_TIMEOUT:-60}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh disable=SC1091
. "$HERE/lib.sh"

[[ -n $EDGE_ADMIN_PASSWORD ]] || die "set EDGE_ADMIN_PASSWORD"
if [[ -n $EDGE_CA && ! -r $EDGE_CA ]]; then
    die "EDGE_CA=$EDGE_CA is not a readable file"
fi
require_tools

RUN=$(date +%s%N)
export RUN
# The edge_id a device registered here gets.
if [[ -n ${EDGE_ID-} ]]; then
    export EDGE_ID
    HOMED='.data.edge_id == $ENV.EDGE_ID'
else
    HOMED='.data.edge_id == null'
fi
export MODEL="edge-sh-model-$RUN"

# devjson NAME SN [EXTRA_JSON]: a device document of this run's model with one NIC;
# EXTRA_JSON is merged on top.
devjson() {
    local extra='{}'
    if (($# >= 3)); then extra=$3; fi
    jq -cn --arg n "$1" --arg m "$MODEL" --arg s "$2" --argjson x "$extra" \
        '{name: $n, type: "gateway", hardware: {model: $m, sn: $s},
          software: {version: "1.0.0", last_update: "2024-01-01"},
          nic: [{type: "eth", mac: "02:00:00:00:00:01", ipv4: "10.0.0.1"}],
          status: "active", description: "made by edge.sh"} + $x'
}

# -----------------------------------------------------------------------------
section "operations: health, readiness, metrics, docs"

call_h "X-Request-Id: edge-sh-$RUN" "" GET /healthz
check_ok "GET /healthz answers 200 alive" 200 '.data.alive == true' '.message == "ok"'
check_eq "GET /healthz echoes X-Request-Id" "$(header x-request-id)" "edge-sh-$RUN"

call "" GET /readyz
check_ok "GET /readyz answers 200 ready with the database ok" 200 \
    '.data.ready == true' '.data.database == "ok"'

call "" GET /metrics
check "GET /metrics answers 200" 200
check_true "GET /metrics is Prometheus text with request counters" \
    grep -q '^# TYPE http_requests counter' <<<"$BODY"
check_true "GET /metrics has the device session gauge" grep -q '^device_sessions [0-9]' <<<"$BODY"
check_true "GET /metrics declares the device login counter" \
    grep -q '^# TYPE device_logins counter' <<<"$BODY"
check_true "GET /metrics has database pool gauges" grep -q '^db_pool_connections ' <<<"$BODY"

call "" GET /openapi.json
check "GET /openapi.json is an OpenAPI 3 document" 200 \
    '.openapi | startswith("3.")' '.info.title | length > 0'
check "GET /openapi.json documents the site routes" 200 \
    '.paths | has("/api/v1/auth/login") and has("/api/v1/devices")
        and has("/api/v1/devices/{id}") and has("/api/v1/devices/{id}/status")
        and has("/api/v1/devices/{id}/config") and has("/api/v1/devices/{id}/commands")
        and has("/api/v1/commands/{id}") and has("/api/v1/commands/{id}/cancel")
        and has("/api/v1/events") and has("/healthz") and has("/readyz") and has("/metrics")'
check "GET /openapi.json documents 200 and 202 for sending a command" 200 \
    '.paths["/api/v1/devices/{id}/commands"].post.responses | has("200") and has("202")'
check "GET /openapi.json declares the bearer scheme" 200 \
    '.components.securitySchemes.bearer.scheme | ascii_downcase == "bearer"'

call "" GET /docs
check "GET /docs answers 200" 200
check_true "GET /docs is HTML" grep -qi '^text/html' <<<"$(header content-type)"
call "" GET /docs/swagger/
check "GET /docs/swagger/ answers 200" 200
check_true "GET /docs/swagger/ is the Swagger UI page" grep -qi 'swagger' <<<"$BODY"

call "" GET "/nope-$RUN"
check_error "an unknown route answers a 404 envelope" 404 NOT_FOUND

# -----------------------------------------------------------------------------
section "auth"

login "$EDGE_ADMIN_USER" "$EDGE_ADMIN_PASSWORD"
check_ok "admin logs in" 200 '.data.token | type == "string" and length > 20' \
    '.data.role == "admin"' ".data.expires_at > $(date +%s)"
ADM=$LOGIN_TOKEN
if [[ -z $ADM ]]; then
    fail "admin token" "cannot go on without an admin token"
    summary
    exit 1
fi

login "$EDGE_ADMIN_USER" "wrong-password-$RUN"
check_error "login with a wrong password answers 401 UNAUTHENTICATED" 401 UNAUTHENTICATED
login "nobody-$RUN" "whatever-password"
check_error "login as an unknown user answers 401 UNAUTHENTICATED" 401 UNAUTHENTICATED
call "" POST /api/v1/auth/login '{"username": "admin"}'
check_error "login without a password answers 400 naming password" 400 INVALID_ARGUMENT password
call "" POST /api/v1/auth/login '{"username": "admin", '
check_error "login with malformed JSON answers 400 naming body" 400 INVALID_ARGUMENT body
# A success clears the account's failed-login count, so reruns never hit the throttle.
login "$EDGE_ADMIN_USER" "$EDGE_ADMIN_PASSWORD"
check_ok "admin logs in again after failed attempts" 200 '.data.token | length > 20'
ADM=${LOGIN_TOKEN:-$ADM}

call "" GET /api/v1/devices
check_error "no token answers 401 UNAUTHENTICATED" 401 UNAUTHENTICATED
call "not-a-token" GET /api/v1/devices
check_error "a forged token answers 401 UNAUTHENTICATED" 401 UNAUTHENTICATED
call "" GET /api/v1/events
check_error "events without a token answer 401" 401 UNAUTHENTICATED

# -----------------------------------------------------------------------------
section "devices"

call "$ADM" POST /api/v1/devices "$(devjson "edge-sh-1-$RUN" "E1-$RUN")"
check_ok "register device 1 answers 201 with id and secret" 201 '.data.id | test("^[0-9]+$")' \
    '.data.secret | type == "string" and length >= 16' ".data.name == \"edge-sh-1-$RUN\"" \
    '.data.hardware.model == $ENV.MODEL' ".data.hardware.sn == \"E1-$RUN\"" \
    '.data.nic == [{type: "eth", mac: "02:00:00:00:00:01", ipv4: "10.0.0.1"}]' \
    '.data.created_at > 0'
check "the edge homes its devices: edge_id is EDGE_ID, null when standalone" 201 "$HOMED"
check_eq "the registration answer says the new device is offline" "$(jval '.data.online')" false
export D1
D1=$(jval '.data.id')
call "$ADM" POST /api/v1/devices "$(devjson "edge-sh-2-$RUN" "E2-$RUN")"
check_ok "register device 2" 201
export D2
D2=$(jval '.data.id')

call "$ADM" GET "/api/v1/devices/$D1"
check_ok "get device 1 shows it offline, without its secret" 200 '.data.id == $ENV.D1' \
    '.data.online == false' "$HOMED" '.data | has("secret") | not'
call "$ADM" GET "/api/v1/devices?model=$MODEL"
check_ok "list by this run's model finds both devices, offline" 200 '.data.total == 2' \
    '[.data.items[].online] == [false, false]'

call "$ADM" POST /api/v1/devices "$(devjson "edge-sh-dup-$RUN" "E1-$RUN")"
check_error "duplicate (model, sn) answers 409 ALREADY_EXISTS naming hardware.sn" 409 \
    ALREADY_EXISTS hardware.sn
call "$ADM" POST /api/v1/devices "$(devjson "edge-sh-bad-$RUN" "B1-$RUN" \
    '{"nic": [{"type": "eth", "mac": "12:34:56:78:9a:zz", "ipv4": "10.0.0.1"}]}')"
check_error "a bad MAC answers 400 naming nic[0].mac" 400 INVALID_ARGUMENT 'nic[0].mac'
call "$ADM" POST /api/v1/devices "$(devjson "edge-sh-bad-$RUN" "B2-$RUN" '{"edge_id": "12345"}')"
check_error "giving edge_id at a standalone edge answers 400 naming edge_id" 400 \
    INVALID_ARGUMENT edge_id
call "$ADM" POST /api/v1/devices "{\"type\": \"gateway\", \"hardware\": {\"model\": \"$MODEL\", \"sn\": \"B3-$RUN\"}}"
check_error "a missing name answers 400 naming name" 400 INVALID_ARGUMENT name
call "$ADM" GET "/api/v1/devices?model=$MODEL"
check_ok "rejected registrations left nothing behind" 200 '.data.total == 2'
call "$ADM" GET /api/v1/devices/1
check_error "an unknown device answers 404" 404 NOT_FOUND
call "$ADM" GET /api/v1/devices/abc
check_error "device id 'abc' answers 400 naming id" 400 INVALID_ARGUMENT id

# -----------------------------------------------------------------------------
section "status of an offline device"

call "$ADM" GET "/api/v1/devices/$D1/status"
check_ok "a device that never connected: offline, version 0, no status" 200 \
    '.data == {device_id: $ENV.D1, online: false, version: 0, config_version: 0, status: null}'
call "$ADM" GET /api/v1/devices/1/status
check_error "status of an unknown device answers 404" 404 NOT_FOUND
call "$ADM" GET /api/v1/devices/abc/status
check_error "status of device 'abc' answers 400 naming id" 400 INVALID_ARGUMENT id
call "$ADM" GET "/api/v1/events?target_id=$D1&action=device."
check_ok "a device that never connected has no device events" 200 '.data.total == 0'

# -----------------------------------------------------------------------------
section "desired configuration"

call "$ADM" GET "/api/v1/devices/$D1/config"
check_error "config before any was set answers 404" 404 NOT_FOUND
call "$ADM" PUT "/api/v1/devices/$D1/config" "{\"report_interval_s\": 30, \"settings\": {\"run\": \"$RUN\"}}"
check_ok "the first PUT config answers version 1" 200 '.data.device_id == $ENV.D1' \
    '.data.version == 1' '.data.report_interval_s == 30' '.data.settings == {run: $ENV.RUN}' \
    '.data.updated_at > 0'
call "$ADM" PUT "/api/v1/devices/$D1/config" '{"report_interval_s": 60, "settings": {"a": "b", "c": ""}}'
check_ok "a second PUT config increments the version" 200 '.data.version == 2' \
    '.data.report_interval_s == 60' '.data.settings == {a: "b", c: ""}'
call "$ADM" GET "/api/v1/devices/$D1/config"
check_ok "GET config answers the latest" 200 '.data.version == 2' '.data.settings == {a: "b", c: ""}'
call "$ADM" PUT "/api/v1/devices/$D1/config" '{"report_interval_s": 0}'
check_error "report_interval_s 0 answers 400 naming report_interval_s" 400 INVALID_ARGUMENT report_interval_s
call "$ADM" PUT "/api/v1/devices/$D1/config" '{"report_interval_s": 86401}'
check_error "report_interval_s 86401 answers 400 naming report_interval_s" 400 INVALID_ARGUMENT report_interval_s
call "$ADM" PUT "/api/v1/devices/$D1/config" '{"settings": {}}'
check_error "a missing report_interval_s answers 400 naming it" 400 INVALID_ARGUMENT report_interval_s
call "$ADM" PUT "/api/v1/devices/$D1/config" '{"report_interval_s": 30, "settings": {"a": 1}}'
check_error "a non-string setting answers 400 naming settings.a" 400 INVALID_ARGUMENT settings.a
call "$ADM" PUT "/api/v1/devices/$D1/config" '{"report_interval_s": 30, "settings": {" ": "x"}}'
check_error "a blank setting key answers 400 naming settings" 400 INVALID_ARGUMENT settings
call "$ADM" PUT "/api/v1/devices/$D1/config" '{"report_interval_s": 30'
check_error "truncated JSON answers 400 naming body" 400 INVALID_ARGUMENT body
call "$ADM" GET "/api/v1/devices/$D1/config"
check_ok "rejected PUTs left the configuration as it was" 200 '.data.version == 2'
call "$ADM" PUT /api/v1/devices/1/config '{"report_interval_s": 30}'
check_error "PUT config of an unknown device answers 404" 404 NOT_FOUND
call "$ADM" GET "/api/v1/devices/$D2/config"
check_error "another device still has no configuration" 404 NOT_FOUND

# -----------------------------------------------------------------------------
section "commands to an offline device"

call "$ADM" POST "/api/v1/devices/$D1/commands" '{"name": "get_status", "timeout_s": 600}'
check_ok "a command to an offline device answers 202 queued" 202 '.message == "accepted"' \
    '.data.id | test("^[0-9]+$")' '.data.device_id == $ENV.D1' '.data.name == "get_status"' \
    '.data.args == {}' '.data.state == "queued"' '.data.progress == 0' '.data.result == null' \
    '.data.timeout_s == 600' '.data.deadline_at == .data.created_at + 600000' \
    ".data.created_by == \"$EDGE_ADMIN_USER\""
export C1
C1=$(jval '.data.id')
call "$ADM" GET "/api/v1/commands/$C1"
check_ok "GET the command: still queued" 200 '.data.id == $ENV.C1' '.data.state == "queued"'
call "$ADM" POST "/api/v1/commands/$C1/cancel"
check_ok "cancel a queued command answers 200 cancelled" 200 '.data.id == $ENV.C1' \
    '.data.state == "cancelled"'
call "$ADM" POST "/api/v1/commands/$C1/cancel"
check_error "cancelling it again answers 409 FAILED_PRECONDITION" 409 FAILED_PRECONDITION
call "$ADM" GET "/api/v1/commands/$C1"
check_ok "the cancelled command stays cancelled" 200 '.data.state == "cancelled"'

call "$ADM" POST "/api/v1/devices/$D1/commands" \
    '{"name": "exec", "args": {"script": "echo", "args": ["x"]}, "timeout_s": 1}'
check_ok "a command with timeout_s 1 is accepted (202 queued)" 202 '.data.state == "queued"' \
    '.data.args == {script: "echo", args: ["x"]}' '.data.deadline_at == .data.created_at + 1000'
export C2
C2=$(jval '.data.id')
poll 30 command_in expired "$C2"
check_ok "it expires when the device does not come back in time" 200 '.data.id == $ENV.C2' \
    '.data.state == "expired"' '.data.result == null'
call "$ADM" POST "/api/v1/commands/$C2/cancel"
check_error "cancelling an expired command answers 409 FAILED_PRECONDITION" 409 FAILED_PRECONDITION

check_gives_up "$D1" reboot
export C3
C3=$(jval '.data.id')

call "$ADM" POST "/api/v1/devices/$D1/commands" '{"name": "set_config", "args": {"report_interval_s": 5}}'
check_ok "timeout_s defaults to 60" 202 '.data.timeout_s == 60' '.data.name == "set_config"' \
    '.data.args == {report_interval_s: 5}'
export C4
C4=$(jval '.data.id')

call "$ADM" POST "/api/v1/devices/$D1/commands" '{"name": "format_disk", "timeout_s": 10}'
check_error "an unknown command name answers 400 naming name" 400 INVALID_ARGUMENT name
call "$ADM" POST "/api/v1/devices/$D1/commands" '{"timeout_s": 10}'
check_error "a missing command name answers 400 naming name" 400 INVALID_ARGUMENT name
call "$ADM" POST "/api/v1/devices/$D1/commands" '{"name": "reboot", "timeout_s": 0}'
check_error "timeout_s 0 answers 400 naming timeout_s" 400 INVALID_ARGUMENT timeout_s
call "$ADM" POST "/api/v1/devices/$D1/commands" '{"name": "reboot", "timeout_s": 86401}'
check_error "timeout_s 86401 answers 400 naming timeout_s" 400 INVALID_ARGUMENT timeout_s
call "$ADM" POST "/api/v1/devices/$D1/commands" '{"name": "reboot", "timeout_s": -5}'
check_error "a negative timeout_s answers 400 naming timeout_s" 400 INVALID_ARGUMENT timeout_s
call "$ADM" POST "/api/v1/devices/$D1/commands" '{"name": "exec", "args": ["echo"]}'
check_error "args that are not an object answer 400 naming args" 400 INVALID_ARGUMENT args
call "$ADM" POST /api/v1/devices/1/commands '{"name": "reboot"}'
check_error "a command to an unknown device answers 404" 404 NOT_FOUND
call "$ADM" GET /api/v1/commands/1
check_error "an unknown command answers 404" 404 NOT_FOUND
call "$ADM" GET /api/v1/commands/abc
check_error "command id 'abc' answers 400 naming id" 400 INVALID_ARGUMENT id
call "$ADM" POST /api/v1/commands/1/cancel
check_error "cancelling an unknown command answers 404" 404 NOT_FOUND

call "$ADM" GET "/api/v1/devices/$D1/commands"
check_ok "list the device's commands: the four, newest first" 200 '.data.total == 4' \
    '[.data.items[].id] == [$ENV.C4, $ENV.C3, $ENV.C2, $ENV.C1]' \
    '[.data.items[].device_id] | all(. == $ENV.D1)'
call "$ADM" GET "/api/v1/devices/$D1/commands?state=cancelled"
check_ok "list filtered by state" 200 '[.data.items[].id] == [$ENV.C1]'
call "$ADM" GET "/api/v1/devices/$D1/commands?per_page=1&page=2"
check_ok "list paginates" 200 '.data.total == 4' '[.data.items[].id] == [$ENV.C3]' \
    '.data.page == 2' '.data.per_page == 1'
call "$ADM" GET "/api/v1/devices/$D1/commands?state=bogus"
check_error "an unknown state filter answers 400 naming state" 400 INVALID_ARGUMENT state
call "$ADM" GET "/api/v1/devices/$D2/commands"
check_ok "another device has no commands" 200 '.data.total == 0' '.data.items == []'
call "$ADM" GET /api/v1/devices/1/commands
check_error "commands of an unknown device answer 404" 404 NOT_FOUND

call "$ADM" POST "/api/v1/commands/$C4/cancel"
check_ok "cancel the last queued command" 200 '.data.state == "cancelled"'

# -----------------------------------------------------------------------------
section "roles"

VW_USER="edge-sh-vw-$RUN"
VW_PASS="vw-pass-$RUN"
call "$ADM" POST /api/v1/users "{\"username\": \"$VW_USER\", \"password\": \"$VW_PASS\", \"role\": \"viewer\"}"
check_ok "create a viewer" 201 '.data.role == "viewer"'
export VW
VW=$(jval '.data.id')
login "$VW_USER" "$VW_PASS"
check_ok "the viewer logs in" 200 '.data.role == "viewer"'
VWT=$LOGIN_TOKEN
call "$VWT" POST "/api/v1/devices/$D1/commands" '{"name": "reboot"}'
check_error "a viewer cannot send commands (403)" 403 PERMISSION_DENIED
call "$VWT" PUT "/api/v1/devices/$D1/config" '{"report_interval_s": 30}'
check_error "a viewer cannot set a configuration (403)" 403 PERMISSION_DENIED
call "$VWT" POST "/api/v1/commands/$C1/cancel"
check_error "a viewer cannot cancel commands (403)" 403 PERMISSION_DENIED
call "$VWT" GET "/api/v1/devices/$D1/status"
check_error "a viewer without groups does not see the device's status (404)" 404 NOT_FOUND
call "$VWT" GET "/api/v1/commands/$C1"
check_error "a viewer without groups does not see its commands (404)" 404 NOT_FOUND
call "$ADM" DELETE "/api/v1/users/$VW"
check_ok "delete the viewer" 200

# -----------------------------------------------------------------------------
section "events"

call "$ADM" GET "/api/v1/events?actor=$EDGE_ADMIN_USER&target_type=commands&target_id=$C1"
check_ok "the admin's two cancels of command 1 are recorded, the second as an error" 200 '.data.total == 2' \
    '[.data.items[].action] | all(. == "POST /api/v1/commands/{id}/cancel")' \
    '[.data.items[] | [.outcome, .status_code]] == [["error", 409], ["ok", 200]]'
call "$ADM" GET "/api/v1/events?actor=$VW_USER&target_id=$C1"
check_ok "the viewer's refused cancel is recorded as a 403" 200 '.data.total == 1' \
    '.data.items[0].status_code == 403' '.data.items[0].outcome == "error"'
call "$ADM" GET "/api/v1/events?actor=nobody-$RUN"
check_ok "failed logins as unknown names are not recorded (metrics count them)" 200 '.data.total == 0'
call "$ADM" GET "/api/v1/events?actor=$EDGE_ADMIN_USER&action=auth/login&outcome=error"
check_ok "a known account's failed login is recorded" 200 '.data.total >= 1' \
    '.data.items[0].action == "POST /api/v1/auth/login"' '.data.items[0].status_code == 401'
call "$ADM" GET "/api/v1/events?outcome=maybe"
check_error "an unknown outcome answers 400 naming outcome" 400 INVALID_ARGUMENT outcome

# -----------------------------------------------------------------------------
if [[ -z $EDGE_DEVICE_URL || -z $AGENT_BIN || -z $EDGE_CA ]]; then
    section "device agent: skipped (set EDGE_DEVICE_URL, AGENT_BIN and EDGE_CA to run it)"
    summary
    exit
fi
section "device agent"

check_true "AGENT_BIN is an executable" test -x "$AGENT_BIN"
AGENT_VERSION=$("$AGENT_BIN" --version 2>/dev/null | awk '{print $2}')
export AGENT_VERSION

call "$ADM" POST /api/v1/devices "$(devjson "edge-sh-agent-$RUN" "A1-$RUN")"
check_ok "register the agent's device" 201
export DA
DA=$(jval '.data.id')
DA_SECRET=$(jval '.data.secret')
mkdir -p "$LIB_TMP/agent-bad" "$LIB_TMP/agent"

# A wrong secret: the edge refuses the login and counts it (a metric, not an event
# row per attempt: a flood of bad logins must not grow the database).
refused_logins() {
    call "" GET /metrics
    in_range "$(metric 'device_logins_total{outcome="refused"}')" 1 1000000000
}
agent_toml "$LIB_TMP/agent-bad.toml" "$LIB_TMP/agent-bad" "$EDGE_DEVICE_URL" "$EDGE_CA" \
    device_id="$DA" secret="wrong-secret-$RUN"
start_agent "$LIB_TMP/agent-bad.toml" "$LIB_TMP/agent-bad.log"
poll 30 refused_logins
stop_agent
check_true "an agent with a wrong secret is refused and counted" refused_logins
call "$ADM" GET "/api/v1/events?action=device.login_refused&target_id=$DA"
check_ok "a refused login writes no event" 200 '.data.total == 0'
call "$ADM" GET "/api/v1/devices/$DA/status"
check_ok "the refused device is not online" 200 '.data.online == false'

# Queued while away: delivered (or not) at login.
call "$ADM" POST "/api/v1/devices/$DA/commands" \
    '{"name": "exec", "args": {"script": "echo", "args": ["queued"]}, "timeout_s": 120}'
check_ok "queue an exec while the device is away" 202 '.data.state == "queued"'
export QA
QA=$(jval '.data.id')
call "$ADM" POST "/api/v1/devices/$DA/commands" \
    '{"name": "exec", "args": {"script": "echo", "args": ["cancelled"]}, "timeout_s": 120}'
export QC
QC=$(jval '.data.id')
call "$ADM" POST "/api/v1/commands/$QC/cancel"
check_ok "queue another one and cancel it" 200 '.data.state == "cancelled"'
call "$ADM" PUT "/api/v1/devices/$DA/config" "{\"report_interval_s\": 2, \"settings\": {\"run\": \"$RUN\"}}"
check_ok "set a configuration while the device is away (version 1)" 200 '.data.version == 1'

agent_toml "$LIB_TMP/agent.toml" "$LIB_TMP/agent" "$EDGE_DEVICE_URL" "$EDGE_CA" \
    device_id="$DA" secret="$DA_SECRET"
start_agent "$LIB_TMP/agent.toml" "$LIB_TMP/agent.log"
if ! poll 30 online_is true "$DA"; then
    printf '# agent log: %s\n' "$(tail -n 5 "$LIB_TMP/agent.log" | tr '\n' ' ')"
fi
check_ok "the agent's device comes online" 200 '.data.online == true'
poll 30 reported "$DA"
check_ok "status shows the agent's version and a report" 200 '.data.online == true' \
    '.data.status.agent_version == $ENV.AGENT_VERSION' '.data.version >= 1' \
    '.data.status.memory_total_bytes > 0'
call "$ADM" GET "/api/v1/devices/$DA"
check_ok "GET device shows it online" 200 '.data.online == true'
call "$ADM" GET "/api/v1/devices?model=$MODEL&sn=A1-$RUN"
check_ok "the device list shows it online" 200 '.data.items[0].online == true'
poll 30 events_found "action=device.online&target_id=$DA"
check_ok "device.online is recorded" 200 '.data.total == 1' \
    '.data.items[0].actor == "device:" + $ENV.DA' '.data.items[0].outcome == "ok"'
call "" GET /metrics
check_true "metrics count an open device session" \
    in_range "$(metric device_sessions)" 1 1000000000
check_true "metrics count a successful device login" \
    in_range "$(metric 'device_logins_total{outcome="ok"}')" 1 1000000000
check_true "metrics count a refused device login" \
    in_range "$(metric 'device_logins_total{outcome="refused"}')" 1 1000000000

poll 30 command_in succeeded "$QA"
check_ok "the exec queued while away ran at login" 200 '.data.state == "succeeded"' \
    '.data.result.output == "queued\n"' '.data.result.exit_code == 0'
call "$ADM" GET "/api/v1/commands/$QC"
check_ok "the cancelled one was not delivered" 200 '.data.state == "cancelled"' '.data.result == null'
poll 30 config_version_is 1 "$DA"
check_ok "the configuration set while away is applied at login" 200 '.data.config_version == 1'

call "$ADM" POST "/api/v1/devices/$DA/commands" \
    '{"name": "exec", "args": {"script": "echo", "args": ["hi"]}, "timeout_s": 20, "wait": true}'
check_ok "exec echo hi with wait answers 200 succeeded" 200 '.message == "finished"' \
    '.data.state == "succeeded"' '.data.progress == 100' '.data.result.output == "hi\n"' \
    '.data.result.exit_code == 0' '.data.result.truncated == false'
export CE
CE=$(jval '.data.id')
call "$ADM" GET "/api/v1/commands/$CE"
check_ok "GET the exec command shows its result" 200 '.data.state == "succeeded"' \
    '.data.result.output == "hi\n"'
call "$ADM" POST "/api/v1/commands/$CE/cancel"
check_error "cancelling a finished command answers 409 FAILED_PRECONDITION" 409 FAILED_PRECONDITION

call "$ADM" POST "/api/v1/devices/$DA/commands" \
    '{"name": "exec", "args": {"script": "rm", "args": ["-rf", "/"]}, "timeout_s": 20, "wait": true}'
check_ok "exec of a script not on the allow-list fails" 200 '.data.state == "failed"' \
    '.data.result.error | test("not allowed")'

call "$ADM" POST "/api/v1/devices/$DA/commands" '{"name": "get_status", "timeout_s": 20, "wait": true}'
check_ok "get_status with wait answers 200 succeeded with the status" 200 \
    '.data.state == "succeeded"' '.data.result.data.agent_version == $ENV.AGENT_VERSION'

call "$ADM" PUT "/api/v1/devices/$DA/config" "{\"report_interval_s\": 1, \"settings\": {\"run\": \"$RUN\", \"k\": \"v\"}}"
check_ok "set a new configuration while online (version 2)" 200 '.data.version == 2'
poll 30 config_version_is 2 "$DA"
check_ok "the device applies it within seconds (status config_version 2)" 200 \
    '.data.config_version == 2'

stop_agent
poll 30 online_is false "$DA"
check_ok "the device goes offline when its agent is killed" 200 '.data.online == false'
poll 30 events_found "action=device.offline&target_id=$DA"
check_ok "device.offline is recorded" 200 '.data.total == 1' \
    '.data.items[0].actor == "device:" + $ENV.DA' '.data.items[0].detail == "connection closed"'
call "$ADM" GET "/api/v1/devices/$DA/status"
check_ok "status keeps the last report of an offline device" 200 \
    '.data.status.agent_version == $ENV.AGENT_VERSION' '.data.config_version == 2'
call "$ADM" POST "/api/v1/devices/$DA/commands" '{"name": "get_status", "timeout_s": 60}'
check_ok "a command after it left is queued again (202)" 202 '.data.state == "queued"'
call "$ADM" POST "/api/v1/commands/$(jval '.data.id')/cancel"
check_ok "cancel it" 200 '.data.state == "cancelled"'

summary
