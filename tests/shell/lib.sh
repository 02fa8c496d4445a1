#!/usr/bin/env bash
# Shared helpers for the center's curl + jq scripts (center.sh, reset.sh).
# Source it; do not run it.
#
# Configuration (environment):
#   CENTER_URL             base URL of the center    (default https://127.0.0.1:8443)
#   CENTER_CA              CA file to trust; empty means curl's default trust store
#   CENTER_ADMIN_USER      admin username            (default admin)
#   CENTER_ADMIN_PASSWORD  admin password            (required)
#   CENTER_CURL_TIMEOUT    seconds per request       (default 60)
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
trap 'rm -rf "$LIB_TMP"' EXIT

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
}

fail() {
    FAILED=$((FAILED + 1))
    printf 'FAIL - %s (%s)\n' "$1" "$2"
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
