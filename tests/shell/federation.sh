#!/usr/bin/env bash
# jq filters below read shell values through $ENV, so single quotes are intended.
# shellcheck disable=SC2016 source-path=SCRIPTDIR
# End-to-end walk through a running federation (a center and two edges, as
# `local-federation` runs them), with curl, jq and real device agents: what an
# operator does at the center reaches the device through its edge and back, what is
# written at an edge reaches the center, and a device roams from one edge to the
# other. Each check prints "ok   - ..." or "FAIL - ... (details)"; the last line is
# "N passed, M failed" and the exit status is non-zero when anything failed.
#
#   FEDERATION_DIR  data directory of the running local-federation (default
#                   ./data/federation): endpoints.json there says where each node
#                   listens, state.json holds the admin password and the simulated
#                   devices, which this suite uses but leaves as they were
#   AGENT_BIN       the device-agent binary (default: the one the federation runs)
#   PACE_S          print each call with its answer and pause between calls
#
# The agents this suite starts are killed when it exits, however it exits. Every
# name and serial number carries a per-run suffix and the suite deletes what it made,
# so it can run again and again; tests/shell/reset.sh (with the same FEDERATION_DIR)
# removes what an interrupted run left.

FEDERATION_DIR=${FEDERATION_DIR:-./data/federation}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh disable=SC1091
. "$HERE/lib.sh"
# shellcheck source=federation-env.sh disable=SC1091
. "$HERE/federation-env.sh"

RUN=$(date +%s%N)
export RUN
export MODEL="fed-sh-model-$RUN"
AGENT_BIN=${AGENT_BIN:-$(jq -r .agent "$ENDPOINTS")}
[[ -x $AGENT_BIN ]] || die "AGENT_BIN=$AGENT_BIN is not an executable"
AGENT_VERSION=$("$AGENT_BIN" --version 2>/dev/null | awk '{print $2}')
export AGENT_VERSION

# devjson NAME SN [EXTRA_JSON]: a device document of this run's model with one NIC;
# EXTRA_JSON is merged on top.
devjson() {
    local extra=${3:-'{}'}
    jq -cn --arg n "$1" --arg m "$MODEL" --arg s "$2" --argjson x "$extra" \
        '{name: $n, type: "gateway", hardware: {model: $m, sn: $s},
          software: {version: "1.0.0", last_update: "2024-01-01"},
          nic: [{type: "eth", mac: "02:00:00:00:00:02", ipv4: "10.0.0.2"}],
          status: "active", description: "made by federation.sh"} + $x'
}

# device_is FILTER DEVICE: GET the device at the current node answers 200 and FILTER
# holds over its body.
device_is() {
    call "$ADM" GET "/api/v1/devices/$2"
    [[ $STATUS == 200 ]] && jq -e "$1" >/dev/null 2>&1 <<<"$BODY"
}

# absent PATH: GET PATH at the current node answers 404.
absent() {
    call "$ADM" GET "$1"
    [[ $STATUS == 404 ]]
}

# batch_done BATCH: every command of the batch is in a final state.
batch_done() {
    call "$ADM" GET "/api/v1/batches/$1"
    [[ $STATUS == 200 ]] && jq -e '.data.done == .data.total' >/dev/null 2>&1 <<<"$BODY"
}

# logs_listed DEVICE: the device has at least one pulled log.
logs_listed() {
    call "$ADM" GET "/api/v1/devices/$1/logs"
    [[ $STATUS == 200 && $(jval '.data.total') -ge 1 ]]
}

# -----------------------------------------------------------------------------
section "the federation: a center and two linked edges"

at center
call "$ADM" GET /api/v1/edges
check_ok "the center lists both edges, linked and caught up" 200 \
    '[.data.items[] | select(.id == $ENV.EDGE1 or .id == $ENV.EDGE2)] | length == 2' \
    '[.data.items[] | select(.id == $ENV.EDGE1 or .id == $ENV.EDGE2) | .link.online] | all'
call "$ADM" GET "/api/v1/edges/$E1"
check_ok "GET an edge shows its link" 200 '.data.id == $ENV.EDGE1' '.data.link.online == true' \
    '.data.link.pending_to_edge >= 0'
for node in edge-1 edge-2; do
    at "$node"
    call "" GET /readyz
    check "$node answers /readyz" 200
done
at center
call "$ADM" GET "/api/v1/groups/$GROUP_ALL/devices?per_page=1000"
check_ok "the group all holds the simulated devices" 200 \
    ".data.total == $SIM_COUNT"
call "$ADM" GET "/api/v1/devices/$SIM1"
check_ok "a simulated device of edge-1 is online, homed at edge-1" 200 \
    '.data.online == true' '.data.edge_id == $ENV.EDGE1'

# -----------------------------------------------------------------------------
section "devices registered at the center reach their edge"

call "$ADM" POST /api/v1/devices "$(devjson "fed-sh-a-$RUN" "FA-$RUN" "$(jq -cn '{edge_id: $ENV.EDGE1}')")"
check_ok "register device A at the center, homed at edge-1" 201 '.data.edge_id == $ENV.EDGE1' \
    '(.data.secret | length) > 0'
export DA
DA=$(jval '.data.id')
DA_SECRET=$(jval '.data.secret')
call "$ADM" POST /api/v1/devices "$(devjson "fed-sh-b-$RUN" "FB-$RUN" "$(jq -cn '{edge_id: $ENV.EDGE2}')")"
check_ok "register device B at the center, homed at edge-2 (it stays offline)" 201 \
    '.data.edge_id == $ENV.EDGE2'
export DB
DB=$(jval '.data.id')
at edge-1
poll 30 device_is '.data.name == "fed-sh-a-" + $ENV.RUN' "$DA"
check_ok "edge-1 has device A within seconds" 200 '.data.id == $ENV.DA' \
    '.data.hardware.sn == "FA-" + $ENV.RUN'
call "$ADM" GET "/api/v1/devices/$DB"
check_error "edge-1 does not hold edge-2's device B" 404 NOT_FOUND
at edge-2
poll 30 device_is '.data.edge_id == $ENV.EDGE2' "$DB"
check_ok "edge-2 has device B" 200 '.data.id == $ENV.DB'
at center
call "$ADM" PATCH "/api/v1/devices/$DA" '{"description": "edited at the center"}'
check_ok "edit device A at the center" 200 '.data.description == "edited at the center"'
at edge-1
poll 30 device_is '.data.description == "edited at the center"' "$DA"
check_ok "the edit reaches edge-1" 200 '.data.description == "edited at the center"'

# -----------------------------------------------------------------------------
section "a real agent at edge-1, logged in by serial number and model"

mkdir -p "$LIB_TMP/agent-a"
agent_toml "$LIB_TMP/a1.toml" "$LIB_TMP/agent-a" "$E1_DEVICES" "$E1_CA" \
    sn="FA-$RUN" model="$MODEL" secret="$DA_SECRET" log_path="$LIB_TMP/agent-a/agent.log"
start_agent "$LIB_TMP/a1.toml" "$LIB_TMP/agent-a.out"
at edge-1
if ! poll 30 reported "$DA"; then
    printf '# agent output: %s\n' "$(tail -n 5 "$LIB_TMP/agent-a.out" | tr '\n' ' ')"
fi
check_ok "edge-1's status of device A: online, with the agent's report" 200 \
    '.data.online == true' '.data.status.agent_version == $ENV.AGENT_VERSION' \
    '.data.status.memory_total_bytes > 0'
at center
poll 30 device_is '.data.online == true' "$DA"
check_ok "the center shows device A online" 200 '.data.online == true'
poll 30 events_found "action=device.online&target_id=$DA"
check_ok "the center has edge-1's device.online event" 200 \
    '.data.items[0].actor == "device:" + $ENV.DA'

# -----------------------------------------------------------------------------
section "commands from the center, run by the agent"

call "$ADM" POST "/api/v1/devices/$DA/commands" \
    '{"name": "exec", "args": {"script": "echo", "args": ["through", "the edge"]}, "timeout_s": 30, "wait": true}'
check_ok "exec with wait answers 200 succeeded with the output" 200 '.message == "finished"' \
    '.data.state == "succeeded"' '.data.result.output == "through the edge\n"' \
    '.data.result.exit_code == 0'
export CW
CW=$(jval '.data.id')
at edge-1
poll 30 command_in succeeded "$CW"
check_ok "edge-1 shows the same command, succeeded" 200 '.data.device_id == $ENV.DA' \
    '.data.result.output == "through the edge\n"'
at center
call "$ADM" POST "/api/v1/devices/$DA/commands" '{"name": "get_status", "timeout_s": 30}'
check_ok "get_status without wait answers 202 at once" 202 '.message == "accepted"' \
    '.data.state == "queued" or .data.state == "sent" or .data.state == "succeeded"'
export CS
CS=$(jval '.data.id')
poll 30 command_in succeeded "$CS"
check_ok "it succeeds, with the device's status as its result" 200 \
    '.data.result.data.agent_version == $ENV.AGENT_VERSION'
call "$ADM" POST "/api/v1/commands/$CS/cancel"
check_error "cancelling a finished command answers 409" 409 FAILED_PRECONDITION
call "$ADM" POST "/api/v1/devices/$DA/commands" \
    '{"name": "exec", "args": {"script": "rm", "args": ["-rf", "/"]}, "timeout_s": 30, "wait": true}'
check_ok "exec of a script not on the agent's allow-list fails" 200 '.data.state == "failed"' \
    '.data.result.error | test("not allowed")'
call "$ADM" GET "/api/v1/devices/$DA/commands"
check_ok "the center lists device A's three commands, newest first" 200 '.data.total == 3' \
    '.data.items[1].id == $ENV.CS' '.data.items[2].id == $ENV.CW'

# -----------------------------------------------------------------------------
section "commands to an offline device: queued at its edge, cancelled, expired"

call "$ADM" POST "/api/v1/devices/$DB/commands" '{"name": "reboot", "timeout_s": 600}'
check_ok "a command to offline device B answers 202 queued" 202 '.data.state == "queued"'
export CQ
CQ=$(jval '.data.id')
at edge-2
poll 30 command_in queued "$CQ"
check_ok "edge-2 holds it, queued for the device" 200 '.data.device_id == $ENV.DB'
at center
call "$ADM" POST "/api/v1/commands/$CQ/cancel"
check_ok "cancel it at the center" 200 '.data.state == "cancelled"'
at edge-2
poll 30 command_in cancelled "$CQ"
check_ok "edge-2 sees it cancelled" 200 '.data.state == "cancelled"'
at center
call "$ADM" POST "/api/v1/devices/$DB/commands" '{"name": "get_status", "timeout_s": 1}'
check_ok "a command with timeout_s 1 to device B is accepted" 202 \
    '.data.deadline_at == .data.created_at + 1000'
export CX
CX=$(jval '.data.id')
poll 30 command_in expired "$CX"
check_ok "it expires at the center when the device does not come" 200 \
    '.data.state == "expired"' '.data.result == null'
at edge-2
poll 30 command_in expired "$CX"
check_ok "and at edge-2" 200 '.data.state == "expired"'
at center
check_gives_up "$DB" get_status

# -----------------------------------------------------------------------------
section "desired configuration from the center"

call "$ADM" PUT "/api/v1/devices/$DA/config" "{\"report_interval_s\": 2, \"settings\": {\"run\": \"$RUN\"}}"
check_ok "PUT device A's configuration at the center (version 1)" 200 '.data.version == 1' \
    '.data.settings == {run: $ENV.RUN}'
at edge-1
poll 30 config_version_is 1 "$DA"
check_ok "the agent applies it: edge-1's status says config_version 1" 200 \
    '.data.config_version == 1'
call "$ADM" GET "/api/v1/devices/$DA/config"
check_ok "edge-1 serves the same configuration" 200 '.data.version == 1' \
    '.data.report_interval_s == 2'
at center
call "$ADM" PUT "/api/v1/devices/$DA/config" '{"report_interval_s": 1, "settings": {"k": "v"}}'
check_ok "a second PUT (version 2)" 200 '.data.version == 2'
at edge-1
poll 30 config_version_is 2 "$DA"
check_ok "the agent applies version 2" 200 '.data.config_version == 2'
at center
call "$ADM" GET "/api/v1/devices/$DA/config"
check_ok "GET the configuration at the center" 200 '.data.version == 2' \
    '.data.settings == {k: "v"}'
call "$ADM" PUT "/api/v1/devices/$DA/config" '{"report_interval_s": 0}'
check_error "report_interval_s 0 answers 400 naming it" 400 INVALID_ARGUMENT report_interval_s

# -----------------------------------------------------------------------------
section "pulled logs: uploaded to the edge, read at the center"

at center
call "$ADM" POST "/api/v1/devices/$DA/commands" '{"name": "pull_logs", "timeout_s": 30, "wait": true}'
check_ok "pull_logs with wait answers 200 succeeded" 200 '.data.state == "succeeded"'
export CL
CL=$(jval '.data.id')
poll 30 logs_listed "$DA"
check_ok "the center lists device A's log" 200 '.data.items[0].command_id == $ENV.CL' \
    '.data.items[0].bytes > 0'
call "$ADM" GET "/api/v1/commands/$CL/logs"
check_true "the center serves the log's text" test "$STATUS" = 200 -a -n "$BODY"
at edge-1
call "$ADM" GET "/api/v1/devices/$DA/logs"
check_ok "edge-1 lists the same log" 200 '.data.items[0].command_id == $ENV.CL'
call "$ADM" GET "/api/v1/commands/$CL/logs"
check_true "edge-1 serves it too" test "$STATUS" = 200 -a -n "$BODY"
at center
call "$ADM" GET "/api/v1/commands/$CW/logs"
check_error "a command that uploaded nothing has no log (404)" 404 NOT_FOUND

# -----------------------------------------------------------------------------
section "fan-outs: a group over both edges, and one edge"

at center
call "$ADM" POST /api/v1/groups "{\"name\": \"fed-sh-$RUN\"}"
check_ok "create a group" 201
export GF
GF=$(jval '.data.id')
members=$(jq -cn --arg a "$DA" --arg s1 "$SIM1" --arg s2 "$SIM2" '{device_ids: [$a, $s1, $s2]}')
call "$ADM" POST "/api/v1/groups/$GF/devices" "$members"
check_ok "put device A and a simulated device of each edge in it" 200
call "$ADM" POST "/api/v1/groups/$GF/commands" '{"name": "get_status", "timeout_s": 30}'
check_ok "a group command answers 202 with its batch" 202 '.data.total == 3'
export BG
BG=$(jval '.data.batch_id')
poll 60 batch_done "$BG"
check_ok "the batch finishes, every command succeeded" 200 '.data.done == 3' \
    '.data.states.succeeded == 3'
call "$ADM" GET "/api/v1/batches/$BG"
check_ok "GET the batch at the center" 200 '.data.batch_id == $ENV.BG' '.data.total == 3'
at edge-2
poll 30 batch_done "$BG"
check_ok "edge-2 sees its share of the batch" 200 '.data.total == 1' '.data.done == 1'
at center
call "$ADM" POST "/api/v1/edges/$E2/commands" '{"name": "get_status", "timeout_s": 5}'
check_ok "an edge command to edge-2 reaches its devices and offline device B" 202 \
    ".data.total == $((E2_SIM_COUNT + 1))"
export BE
BE=$(jval '.data.batch_id')
poll 60 batch_done "$BE"
check_ok "it finishes: the online ones succeeded, device B's expired" 200 \
    ".data.states.succeeded == $E2_SIM_COUNT" '.data.states.expired == 1'
call "$ADM" GET /api/v1/batches/1
check_error "an unknown batch answers 404" 404 NOT_FOUND
call "$ADM" POST "/api/v1/groups/$GF/commands" '{"name": "format_disk"}'
check_error "a group command with an unknown name answers 400 naming name" 400 \
    INVALID_ARGUMENT name

# -----------------------------------------------------------------------------
section "roaming: device A moves from edge-1 to edge-2"

stop_agent
at edge-1
poll 30 online_is false "$DA"
check_ok "device A is offline at edge-1 once its agent stopped" 200 '.data.online == false'
agent_toml "$LIB_TMP/a2.toml" "$LIB_TMP/agent-a" "$E2_DEVICES" "$E2_CA" \
    sn="FA-$RUN" model="$MODEL" secret="$DA_SECRET" log_path="$LIB_TMP/agent-a/agent.log"
start_agent "$LIB_TMP/a2.toml" "$LIB_TMP/agent-a2.out"
at center
if ! poll 30 device_is '.data.online == true and .data.edge_id == $ENV.EDGE2' "$DA"; then
    printf '# agent output: %s\n' "$(tail -n 5 "$LIB_TMP/agent-a2.out" | tr '\n' ' ')"
fi
check_ok "the center re-homes device A at edge-2, online" 200 '.data.edge_id == $ENV.EDGE2' \
    '.data.online == true'
poll 30 events_found "action=device.roamed&target_id=$DA"
check_ok "device.roamed is recorded" 200 '.data.total >= 1'
at edge-2
poll 30 reported "$DA"
check_ok "edge-2 reports device A online" 200 '.data.online == true'
at edge-1
poll 30 absent "/api/v1/devices/$DA"
check_error "edge-1 no longer holds device A" 404 NOT_FOUND
at center
call "$ADM" POST "/api/v1/devices/$DA/commands" \
    '{"name": "exec", "args": {"script": "echo", "args": ["roamed"]}, "timeout_s": 30, "wait": true}'
check_ok "a command from the center reaches it through edge-2" 200 '.data.state == "succeeded"' \
    '.data.result.output == "roamed\n"'
call "$ADM" GET "/api/v1/devices?edge=$E2&model=$MODEL"
check_ok "the center lists it among edge-2's devices" 200 '[.data.items[].id] | index($ENV.DA) != null'
stop_agent

# -----------------------------------------------------------------------------
section "a device registered at an edge reaches the center"

at edge-2
call "$ADM" POST /api/v1/devices "$(devjson "fed-sh-c-$RUN" "FC-$RUN")"
check_ok "register device C at edge-2's site API" 201 '.data.edge_id == $ENV.EDGE2'
export DC
DC=$(jval '.data.id')
at center
poll 30 device_is '.data.name == "fed-sh-c-" + $ENV.RUN' "$DC"
check_ok "the center has device C, homed at edge-2" 200 '.data.edge_id == $ENV.EDGE2'
at edge-2
call "$ADM" DELETE "/api/v1/devices/$DC"
check_ok "delete device C at edge-2" 200
at center
poll 30 absent "/api/v1/devices/$DC"
check_error "the center deletes it too" 404 NOT_FOUND

# -----------------------------------------------------------------------------
section "clean up: what the center deletes, the edges delete"

at center
call "$ADM" DELETE "/api/v1/groups/$GF"
check_ok "delete the group" 200
for d in "$DA" "$DB"; do
    call "$ADM" DELETE "/api/v1/devices/$d"
    check_ok "delete device $d at the center" 200
done
at edge-2
poll 30 absent "/api/v1/devices/$DA"
check_error "edge-2 no longer holds device A" 404 NOT_FOUND
poll 30 absent "/api/v1/devices/$DB"
check_error "edge-2 no longer holds device B" 404 NOT_FOUND
at center
call "$ADM" GET "/api/v1/devices/$SIM1"
check_ok "the simulated devices are as they were" 200 '.data.online == true' \
    '.data.edge_id == $ENV.EDGE1'

summary
