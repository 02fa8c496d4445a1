#!/usr/bin/env bash
# Shared helpers of the curl + jq scripts (center.sh, edge.sh, federation.sh, reset.sh).
# Source it; do not run it.
#
# Configuration (environment):
#   CENTER_URL             base URL of the center    (default https://127.0.0.1:8443)
#   CENTER_CA              CA file to trust; empty means curl's default trust store
#   CENTER_ADMIN_USER      admin username            (default admin)
#   CENTER_ADMIN_PASSWORD  admin password            (required)
#   CENTER_CURL_TIMEOUT    seconds per request       (default 60)
#   PACE_S                 when set, print every call with its answer and pause this
#                          many seconds after its checks, so a person can follow
#
# Requests: `call TOKEN METHOD PATH [BODY [CONTENT_TYPE]]` sets the globals
#   STATUS   the HTTP status code ("000" when the request failed outright)
#   BODY     the response body
#   HEADERS  the response headers (CRs stripped)
# TOKEN is a bearer token, or "" to send no Authorization header. Extra curl
# arguments for every call can go in the array CALL_EXTRA; `call_h` adds one header.
#
# Checks print one line each: "ok   - description" or "FAIL - description (details)";
# `summary` prints "N passed, M failed" and returns non-zero if anything failed.

# shellcheck disable=SC2034  # STATUS, BODY, HEADERS, LOGIN_TOKEN are read by the sourcing scripts

CENTER_URL=${CENTER_URL:-https://127.0.0.1:8443}
CENTER_URL=${CENTER_URL%/}
CENTER_CA=${CENTER_CA:-}
CENTER_ADMIN_USER=${CENTER_ADMIN_USER:-admin}
CENTER_ADMIN_PASSWORD=${CENTER_ADMIN_PASSWORD:-}
CENTER_CURL_TIMEOUT=${CENTER_CURL_TIMEOUT:-60}
PACE_S=${PACE_S:-}
AGENT_BIN=${AGENT_BIN:-}
PACE_DUE=0

PASSED=0
FAILED=0
STATUS=""
BODY=""
HEADERS=""
LOGIN_TOKEN=""
CALL_EXTRA=()
H2_RETRIES=0

CURL_BASE=(curl -sS --max-time "$CENTER_CURL_TIMEOUT")
if [[ -n $CENTER_CA ]]; then
    CURL_BASE+=(--cacert "$CENTER_CA")
fi

LIB_TMP=$(mktemp -d "${TMPDIR:-/tmp}/center-shell.XXXXXX") || {
    echo "cannot create a temporary directory" >&2
    exit 2
}
# Background processes a script started (device agents), killed on any exit.
BG_PIDS=()
lib_cleanup() {
    local pid
    for pid in "${BG_PIDS[@]}"; do
        kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    done
    rm -rf "$LIB_TMP"
}
trap lib_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# die MESSAGE: a setup problem that makes going on pointless.
die() {
    echo "error: $*" >&2
    exit 2
}

# require_tools: curl and jq must be installed, and the admin password set.
require_tools() {
    local t
    for t in curl jq; do
        command -v "$t" >/dev/null 2>&1 || die "$t is required"
    done
    [[ -n $CENTER_ADMIN_PASSWORD ]] || die "set CENTER_ADMIN_PASSWORD"
    if [[ -n $CENTER_CA && ! -r $CENTER_CA ]]; then
        die "CENTER_CA=$CENTER_CA is not a readable file"
    fi
}

# call TOKEN METHOD PATH [BODY [CONTENT_TYPE]]
# Sends BODY (when given, even empty) on stdin so large bodies do not hit argv limits.
call() {
    local token=$1 method=$2 path=$3
    local args=("${CURL_BASE[@]}" -X "$method" -o "$LIB_TMP/body" -D "$LIB_TMP/headers"
        -w '%{http_code}' "${CALL_EXTRA[@]}")
    if [[ -n $token ]]; then
        args+=(-H "Authorization: Bearer $token")
    fi
    local rc
    : >"$LIB_TMP/body"
    : >"$LIB_TMP/headers"
    if (($# >= 4)); then
        args+=(-H "Content-Type: ${5:-application/json}" --data-binary @-)
        STATUS=$(printf '%s' "$4" | "${args[@]}" "$CENTER_URL$path" 2>"$LIB_TMP/err")
        rc=$?
    else
        STATUS=$("${args[@]}" "$CENTER_URL$path" 2>"$LIB_TMP/err" </dev/null)
        rc=$?
    fi
    [[ -n $STATUS ]] || STATUS=000
    # When the center answers before reading a request body (401 before the body,
    # 413), HTTP/2 ends the stream with RST_STREAM(NO_ERROR) after the complete
    # response, as RFC 9113 section 8.1 allows. curl 7.x reports that as error 92
    # and drops the status; repeat such a request once over HTTP/1.1.
    if ((rc == 92)) && [[ -z ${CALL_H1-} ]]; then
        H2_RETRIES=$((H2_RETRIES + 1))
        local CALL_H1=1
        local CALL_EXTRA=("${CALL_EXTRA[@]}" --http1.1)
        call "$@"
        return
    fi
    if [[ $STATUS == 000 ]]; then
        BODY="curl: $(tr '\n' ' ' <"$LIB_TMP/err")"
    else
        BODY=$(cat "$LIB_TMP/body")
    fi
    HEADERS=$(tr -d '\r' <"$LIB_TMP/headers")
    if [[ -n $PACE_S && -z ${PACE_QUIET-} ]]; then
        show_call "$method" "$path" "${4-}"
    fi
}

# masked TEXT: TEXT on one line with passwords, tokens and secrets blanked, cut to
# 300 characters.
masked() {
    local s
    s=$(tr '\n' ' ' <<<"$1" |
        sed -E 's/"(password|token|secret)" *: *"[^"]*"/"\1":"…"/g')
    if ((${#s} > 300)); then
        s="${s:0:300}..."
    fi
    printf '%s' "$s"
}

# show_call METHOD PATH [BODY]: the request and the answer of the last call, for
# PACE_S; the pause comes after the checks that read it.
show_call() {
    printf '> %s %s%s\n' "$1" "$CENTER_URL$2" "${3:+ $(masked "$3")}"
    printf '< %s %s\n' "$STATUS" "$(masked "$BODY")"
    PACE_DUE=1
}

# pace: after the checks of a shown call, wait PACE_S seconds.
pace() {
    if ((PACE_DUE)); then
        PACE_DUE=0
        sleep "$PACE_S"
    fi
}

now_ms() {
    date +%s%3N
}

# poll SECONDS COMMAND...: runs COMMAND every quarter second until it succeeds or
# SECONDS have passed; returns whether it succeeded. COMMAND usually makes a `call`,
# so its last answer is left in STATUS and BODY for the check that follows. Under
# PACE_S only that last answer is shown, with the number of tries.
poll() {
    local until=$(($(now_ms) + $1 * 1000)) tries=0 ok=1
    shift
    while :; do
        tries=$((tries + 1))
        if PACE_QUIET=1 "$@"; then
            ok=0
            break
        fi
        (($(now_ms) >= until)) && break
        sleep 0.25
    done
    if [[ -n $PACE_S ]]; then
        printf '# polled %d time(s): %s\n' "$tries" "$*"
        printf '< %s %s\n' "$STATUS" "$(masked "$BODY")"
        PACE_DUE=1
    fi
    return "$ok"
}

# call_h "NAME: VALUE" TOKEN METHOD PATH [BODY [CONTENT_TYPE]]: call with one extra
# request header (it can even replace Authorization when TOKEN is "").
call_h() {
    local CALL_EXTRA=(-H "$1")
    shift
    call "$@"
}

# header NAME: the value of response header NAME (any case) of the last call.
header() {
    local line name value=""
    while IFS= read -r line; do
        name=${line%%:*}
        if [[ $line == *:* && ${name,,} == "${1,,}" ]]; then
            value=${line#*:}
            value=${value# }
        fi
    done <<<"$HEADERS"
    printf '%s' "$value"
}

# login USER PASSWORD: POST /api/v1/auth/login; sets LOGIN_TOKEN ("" on failure).
login() {
    local body
    body=$(jq -cn --arg u "$1" --arg p "$2" '{username: $u, password: $p}')
    call "" POST /api/v1/auth/login "$body"
    LOGIN_TOKEN=""
    if [[ $STATUS == 200 ]]; then
        LOGIN_TOKEN=$(jval '.data.token // empty')
    fi
}

# jval FILTER: jq -r FILTER over the last body (empty on a non-JSON body).
jval() {
    jq -r "$1" <<<"$BODY" 2>/dev/null
}

# snippet: the last body on one line, cut to 300 characters.
snippet() {
    local s
    s=$(tr '\n' ' ' <<<"$BODY")
    if ((${#s} > 300)); then
        s="${s:0:300}..."
    fi
    printf '%s' "$s"
}

pass() {
    PASSED=$((PASSED + 1))
    printf 'ok   - %s\n' "$1"
    pace
}

fail() {
    FAILED=$((FAILED + 1))
    printf 'FAIL - %s (%s)\n' "$1" "$2"
    pace
}

# section TITLE: a comment line between groups of checks.
section() {
    printf '# %s\n' "$1"
}

# check DESC WANT_STATUS [JQ_FILTER...]: the last call answered WANT_STATUS and every
# filter is true over its JSON body.
check() {
    local desc=$1 want=$2 why="" f
    shift 2
    if [[ $STATUS != "$want" ]]; then
        why="HTTP $STATUS, expected $want; body: $(snippet)"
    else
        for f in "$@"; do
            if ! jq -e "$f" >/dev/null 2>&1 <<<"$BODY"; then
                why="not true: $f; body: $(snippet)"
                break
            fi
        done
    fi
    if [[ -z $why ]]; then pass "$desc"; else fail "$desc" "$why"; fi
}

# check_ok DESC WANT_STATUS [JQ_FILTER...]: check plus the success envelope
# {status == WANT_STATUS, message, data} with no error code.
check_ok() {
    local desc=$1 want=$2
    shift 2
    check "$desc" "$want" ".status == $want" '(.message | type) == "string"' \
        'has("data")' 'has("code") | not' "$@"
}

# check_error DESC WANT_STATUS CODE [FIELD]: an error envelope with that status,
# code and (when given) field.
check_error() {
    local desc=$1 want=$2 code=$3 field=${4-}
    local filters=(".status == $want" ".code == \"$code\"" '.data == null'
        '(.message | type) == "string" and (.message | length) > 0')
    if [[ -n $field ]]; then
        filters+=(".field == \"$field\"")
    fi
    check "$desc" "$want" "${filters[@]}"
}

# check_eq DESC GOT EXPECTED
check_eq() {
    if [[ $2 == "$3" ]]; then
        pass "$1"
    else
        fail "$1" "got '$2', expected '$3'"
    fi
}

# check_true DESC COMMAND...: passes when COMMAND succeeds.
check_true() {
    local desc=$1
    shift
    if "$@"; then
        pass "$desc"
    else
        fail "$desc" "false: $*; HTTP $STATUS; body: $(snippet)"
    fi
}

# summary: prints "N passed, M failed"; returns 1 when something failed.
summary() {
    if ((H2_RETRIES > 0)); then
        printf '# %d request(s) repeated over HTTP/1.1 after curl error 92 (see call in lib.sh)\n' \
            "$H2_RETRIES"
    fi
    printf '%d passed, %d failed\n' "$PASSED" "$FAILED"
    ((FAILED == 0))
}

# admin_login: logs the admin in (token in LOGIN_TOKEN), or dies.
admin_login() {
    login "$CENTER_ADMIN_USER" "$CENTER_ADMIN_PASSWORD"
    [[ -n $LOGIN_TOKEN ]] || die "admin login as $CENTER_ADMIN_USER failed: HTTP $STATUS $(snippet)"
}

# The helpers below ask the node the last `call` went to, as the admin token ADM.

# command_in STATE ID: command ID is in STATE now.
command_in() {
    call "$ADM" GET "/api/v1/commands/$2"
    [[ $STATUS == 200 && $(jval '.data.state') == "$1" ]]
}

# online_is true|false DEVICE: what the device's status at its edge says about its
# presence.
online_is() {
    call "$ADM" GET "/api/v1/devices/$2/status"
    [[ $STATUS == 200 && $(jval '.data.online') == "$1" ]]
}

# reported DEVICE: the device is online and its status carries an agent version.
reported() {
    online_is true "$1" && [[ -n $(jval '.data.status.agent_version // empty') ]]
}

# config_version_is VERSION DEVICE: the device reported running that configuration.
config_version_is() {
    call "$ADM" GET "/api/v1/devices/$2/status"
    [[ $STATUS == 200 && $(jval '.data.config_version') == "$1" ]]
}

# events_found QUERY: GET /api/v1/events?QUERY lists at least one event.
events_found() {
    call "$ADM" GET "/api/v1/events?$1"
    [[ $STATUS == 200 && $(jval '.data.total') -ge 1 ]]
}

# in_range VALUE LOW HIGH: LOW <= VALUE <= HIGH (integers; empty counts as 0).
in_range() {
    local v=${1:-0}
    ((v >= $2 && v <= $3))
}

# check_gives_up DEVICE NAME: command NAME with wait and timeout_s 2, to a device that
# is away, answers 202 queued (or 200 once expired) after those 2 s, not before.
check_gives_up() {
    local took
    took=$(now_ms)
    call "$ADM" POST "/api/v1/devices/$1/commands" "{\"name\": \"$2\", \"timeout_s\": 2, \"wait\": true}"
    took=$(($(now_ms) - took))
    check "wait on an offline device answers 202 queued, or 200 once expired" "$STATUS" \
        '(.status == 202 and .data.state == "queued") or (.status == 200 and .data.state == "expired")'
    check_true "wait gives up after timeout_s, not before (took $took ms)" \
        in_range "$took" 1500 1000000000
}

# metric NAME: the value of an unlabelled (or fully labelled) sample in the last body.
metric() {
    awk -v n="$1" '$1 == n {print $2}' <<<"$BODY"
}

# toml_str VALUE: VALUE as a TOML basic string (JSON string escapes are valid TOML).
toml_str() {
    jq -n --arg s "$1" '$s'
}

# agent_toml FILE STATE_DIR EDGE_URL CA_FILE KEY=VALUE...: writes the configuration
# of an agent that dials one edge, reports every second, may run /bin/echo as
# `echo`, and has the given string settings (device_id, secret, sn, model, log_path).
agent_toml() {
    local file=$1 state=$2 edge=$3 ca=$4 kv
    shift 4
    {
        for kv in "$@"; do
            printf '%s = %s\n' "${kv%%=*}" "$(toml_str "${kv#*=}")"
        done
        printf 'edges = [%s]\n' "$(toml_str "$edge")"
        printf 'ca_file = %s\n' "$(toml_str "$ca")"
        printf 'report_interval_s = 1\n'
        printf 'state_dir = %s\n' "$(toml_str "$state")"
        printf 'backoff_cap_s = 2\n'
        printf '[scripts]\n'
        printf 'echo = "/bin/echo"\n'
    } >"$file"
}

# start_agent CONFIG LOG: runs AGENT_BIN in the background; its PID in AGENT_PID.
# (env execs the agent, so the PID is the agent's; AGENT_EDGES would override edges.)
start_agent() {
    env -u AGENT_EDGES "$AGENT_BIN" run --config "$1" >"$2" 2>&1 &
    AGENT_PID=$!
    BG_PIDS+=("$AGENT_PID")
}

# stop_agent: kills the agent started last and waits for it.
stop_agent() {
    kill "$AGENT_PID" 2>/dev/null
    wait "$AGENT_PID" 2>/dev/null
    local keep=() pid
    for pid in "${BG_PIDS[@]}"; do
        [[ $pid == "$AGENT_PID" ]] || keep+=("$pid")
    done
    BG_PIDS=("${keep[@]}")
}
