#!/usr/bin/env bash
# Device hub benchmark (docs/design.md §8), release build, loopback only.
#
#   bash tests/bench-hub.sh                  one edge holding 5,000, 10,000 and as many
#                                            sessions as the open-file limit allows
#   bash tests/bench-hub.sh --spread 100000  100,000 sessions spread over several edge
#                                            processes, each below the open-file limit
#   bash tests/bench-hub.sh --spread 100000 --soak-s 600
#                                            holds them 10 minutes instead (a soak):
#                                            heartbeats, status reports and one command a
#                                            second to a random device; prints
#                                            disconnects, failed commands and RSS drift
#
# For each size, over plain WebSocket and over TLS, it prints: the time for all devices
# to log in, first and after the edge is killed (-9) and started again; the edge's resident memory per session (above a baseline taken after a
# warm-up); the edge's CPU use, in % of one core, while every session idles but
# heartbeats; and the command round trip p50/p99 from the site API to a device and
# back (get_status, sequential, one kept-alive connection, different devices).
#
# Settings (environment):
#   BENCH_SIZES     single-edge sizes                 [5000 10000 <limit - 200>]
#   BENCH_MODES     transports, in order              [plain tls]
#   BENCH_CPU_S     CPU measuring window, seconds     [30, two heartbeat intervals]
#   BENCH_COMMANDS  measured commands per edge        [300]
#   BENCH_EDGES     edges for --spread                [as few as stay at 85% of the limit]
#
# Every wait is bounded, and every process it starts is stopped by its PID on exit.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

spread=0
soak_s=0
while (($#)); do
  case $1 in
    --spread) spread=${2:?--spread needs a number of devices}; shift 2 ;;
    --soak-s) soak_s=${2:?--soak-s needs a number of seconds}; shift 2 ;;
    -h | --help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
done
[[ $spread =~ ^[0-9]+$ ]] || { echo "--spread needs a number, not $spread" >&2; exit 2; }
[[ $soak_s =~ ^[0-9]+$ ]] || { echo "--soak-s needs a number of seconds, not $soak_s" >&2; exit 2; }

read -r -a modes <<<"${BENCH_MODES:-plain tls}"
for m in "${modes[@]}"; do
  [[ $m == plain || $m == tls ]] || { echo "BENCH_MODES: $m is neither plain nor tls" >&2; exit 2; }
done
cpu_s=${BENCH_CPU_S:-30}
commands=${BENCH_COMMANDS:-300}
password=bench-password
hz=$(getconf CLK_TCK)
warmup=500 # sessions opened and closed before the memory baseline

work=$(mktemp -d /tmp/fleet-hub-bench.XXXXXX)
edge_pids=()
sim_pids=()
helper_pids=()
gone() { ! kill -0 "$1" 2>/dev/null; }
# SIGTERM (edges then stop gracefully), and SIGKILL what still runs 30 s later.
stop_pids() {
  local p
  for p in "$@"; do kill "$p" 2>/dev/null || true; done
  for p in "$@"; do
    wait_for 30 gone "$p" || kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
}
cleanup() {
  stop_pids "${sim_pids[@]}" "${helper_pids[@]}" "${edge_pids[@]}"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { echo "$EPOCHREALTIME"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
# Runs "$@" every 0.1 s until it succeeds; fails after $1 seconds.
wait_for() {
  local until=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < until)) || return 1
    sleep 0.1
  done
}

# --- limits and sizes --------------------------------------------------------------

limit=$(ulimit -Hn)
ulimit -n "$limit"
# An edge needs descriptors besides its sessions: database, listeners, API clients.
margin=200
if ((spread > 0)); then
  # Edges and simulators each stay well below the limit (e.g. 6 x 16,667 at 20,000).
  per_edge_max=$((limit * 85 / 100))
  edges=${BENCH_EDGES:-$(((spread + per_edge_max - 1) / per_edge_max))}
  sizes=("$spread")
else
  edges=1
  read -r -a sizes <<<"${BENCH_SIZES:-5000 10000 $((limit - margin))}"
fi
for n in "${sizes[@]}"; do
  if ! [[ $n =~ ^[1-9][0-9]*$ ]]; then echo "bad size: $n" >&2; exit 2; fi
  ((spread > 0 || n <= limit - margin)) || { echo "size $n is above the open-file limit $limit less $margin" >&2; exit 2; }
done
top=$(printf '%s\n' "${sizes[@]}" | sort -n | tail -1)
# Devices of each edge: its share of the largest size.
per_edge=()
for ((i = 0; i < edges; i++)); do per_edge+=($(((top + edges - 1 - i) / edges))); done
# Simulators also stay below the limit (one descriptor per session, plus their own).
per_sim=$((limit * 85 / 100))
# One source address has ~28k ephemeral ports, shared by every connection from it and
# by the closed ones still in TIME_WAIT, and the kernel's search for a free one grows
# with their number: with all 19,800 devices of one edge on 127.0.0.1, that search took
# about 60 % of the simulators' CPU in a reconnect storm, which then measured the load
# generator instead of the edge. Every 1,000 sessions get their own 127.0.0.x source.
sources=()
for ((s = 2; s < 2 + ((spread > 0 ? spread : top) + 999) / 1000; s++)); do
  sources+=(--source-ip "127.0.0.$s")
done

echo "open-file limit: $limit (hard, cannot be raised here); every edge and simulator process stays below it"
if ((spread > 0)); then
  echo "spreading $spread sessions over $edges edge processes (${per_edge[*]}), simulators of at most $per_sim, $((${#sources[@]} / 2)) source addresses"
else
  echo "one edge, up to $((limit - margin)) sessions (the limit less $margin descriptors for its database and API); sizes: ${sizes[*]}; $((${#sources[@]} / 2)) source addresses"
fi

# --- build -------------------------------------------------------------------------

cargo build --release --quiet -p center-cloud -p edge-cloud -p device-agent
edge_bin="$root/target/release/edge-cloud"
agent_bin="$root/target/release/device-agent"
rtt_bin=$(cargo build --release --quiet -p edge-cloud --bench command_rtt --message-format=json |
  grep -o '"executable":"[^"]*command_rtt[^"]*"' | tail -1 | cut -d'"' -f4)
[[ -x $rtt_bin ]] || { echo "could not find the command_rtt bench binary" >&2; exit 1; }

# --- edges ---------------------------------------------------------------------------

api_port() { echo $((29443 + 2 * $1)); }
device_port() { echo $((29444 + 2 * $1)); }
ca_of() { echo "$work/edge-$1/tls/ca.crt"; }
mode=tls
site() {
  if [[ $mode == tls ]]; then echo "https://127.0.0.1:$(api_port "$1")"; else echo "http://127.0.0.1:$(api_port "$1")"; fi
}
device_url() {
  if [[ $mode == tls ]]; then echo "wss://127.0.0.1:$(device_port "$1")/devices"; else echo "ws://127.0.0.1:$(device_port "$1")/devices"; fi
}
api() { # edge, path
  local tls=()
  [[ $mode == tls ]] && tls=(--cacert "$(ca_of "$1")")
  curl -fsS --max-time 5 "${tls[@]}" "$(site "$1")$2" 2>/dev/null
}
sessions() { { api "$1" /metrics || true; } | awk '$1 == "device_sessions" { print $2; f = 1 } END { if (!f) print 0 }'; }
no_sessions() { [[ $(sessions "$1") == 0 ]]; }
ready() { api "$1" /readyz >/dev/null; }
rss_kib() { awk '/VmRSS/ { print $2 }' "/proc/$1/status"; }
ticks() { # pids...: user + system CPU ticks, threads included
  local p t=0
  for p in "$@"; do t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0))); done
  echo "$t"
}

start_edges() {
  local i extra=()
  [[ $mode == plain ]] && extra=(--insecure-http)
  edge_pids=()
  for ((i = 0; i < edges; i++)); do
    # The simulated fleet dials from a few loopback addresses, where a real one comes
    # from as many addresses as devices: the per-source cap is lifted to match.
    EDGE_ADMIN_PASSWORD=$password "$edge_bin" serve --listen "127.0.0.1:$(api_port "$i")" \
      --device-listen "127.0.0.1:$(device_port "$i")" --data-dir "$work/edge-$i" \
      --max-unauthenticated-per-source 100000 \
      --log warn "${extra[@]}" >>"$work/edge-$i.log" 2>&1 &
    edge_pids+=("$!")
  done
  for ((i = 0; i < edges; i++)); do
    wait_for 60 ready "$i" || { echo "edge $i did not get ready; its log:" >&2; tail -20 "$work/edge-$i.log" >&2; exit 1; }
  done
}

stop_edges() { # gracefully, so that they write the devices' last statuses
  stop_pids "${edge_pids[@]}"
  edge_pids=()
}

# Starts simulators for the first $2 devices of edge $1 (several when over per_sim).
start_sims() {
  local i=$1 n=$2 offset=0 take part
  while ((offset < n)); do
    take=$((n - offset < per_sim ? n - offset : per_sim))
    part="$work/part-$i-$offset.csv"
    { echo "device_id,secret"; tail -n +2 "$work/devices-$i.csv" | sed -n "$((offset + 1)),$((offset + take))p"; } >"$part"
    local tls=()
    [[ $mode == tls ]] && tls=(--ca "$(ca_of "$i")")
    "$agent_bin" simulate --credentials "$part" --edge "$(device_url "$i")" "${tls[@]}" \
      "${sources[@]}" --report-interval-s 60 2>>"$work/sim-$i.log" &
    sim_pids+=("$!")
    sims_of[i]+=" $!"
    offset=$((offset + take))
  done
}

sims_of=()
stop_sims() {
  stop_pids "${sim_pids[@]}"
  sim_pids=()
  sims_of=()
  local i
  for ((i = 0; i < edges; i++)); do
    wait_for 60 no_sessions "$i" || echo "edge $i still holds $(sessions "$i") sessions" >&2
  done
}

# Starts n devices (each edge its share), one edge after another so that the edges do
# not compete for the machine's two cores while their devices log in, and waits until
# each edge holds all of its share, at most 60 s + 5 ms a device. Sets login_s[i], the
# time edge i took, and login_total, the time for all.
want=()
login_s=()
login_total=
holds_its_share() { (($(sessions "$1") >= want[$1])); }
connect_all() {
  local n=$1 i started t
  want=()
  login_s=()
  for ((i = 0; i < edges; i++)); do want+=($(((n + edges - 1 - i) / edges))); done
  started=$(now)
  for ((i = 0; i < edges; i++)); do
    t=$(now)
    start_sims "$i" "${want[i]}"
    if wait_for $((60 + want[i] / 200)) holds_its_share "$i"; then
      login_s[i]=$(since "$t")
    else
      login_s[i]="timeout($(sessions "$i")/${want[i]})"
    fi
  done
  login_total=$(since "$started")
}

# --- provisioning --------------------------------------------------------------------

# Devices are registered through the site API, which needs the edge's TLS CA.
mode=tls
start_edges
echo "provisioning ${per_edge[*]} devices (site API, ${edges} edge(s))"
provisioned=$(now)
for ((i = 0; i < edges; i++)); do
  : >"$work/provision-$i.log"
  AGENT_SITE_PASSWORD=$password "$agent_bin" provision --site "$(site "$i")" --ca "$(ca_of "$i")" \
    --count "${per_edge[i]}" --prefix "bench-$i" --out "$work/devices-$i.csv" \
    >/dev/null 2>"$work/provision-$i.log" &
  helper_pids+=("$!")
done
# About 1 ms a device at worst, with room to spare.
deadline=$((SECONDS + 120 + top / 500))
while :; do
  running=0
  for p in "${helper_pids[@]}"; do kill -0 "$p" 2>/dev/null && running=1; done
  ((running == 0)) && break
  ((SECONDS < deadline)) || { echo "provisioning did not finish in time" >&2; exit 1; }
  done_n=0
  for ((i = 0; i < edges; i++)); do
    d=$(tr '\r' '\n' <"$work/provision-$i.log" | awk -F'[ /]' '/registered/ { n = $2 } END { print n + 0 }')
    done_n=$((done_n + d))
  done
  printf '\r  %d/%d registered (%s s)' "$done_n" "$top" "$(since "$provisioned")"
  sleep 2
done
for p in "${helper_pids[@]}"; do
  wait "$p" || { echo; echo "provisioning failed:" >&2; cat "$work"/provision-*.log >&2; exit 1; }
done
helper_pids=()
printf '\r  %d devices registered in %s s\n' "$top" "$(since "$provisioned")"

stop_edges

# Every device logs in once, so each has a stored status that later edge starts load:
# the per-session memory below is then the session's alone, the same for every size.
mode=${modes[0]}
echo "priming: every device logs in once ($mode)"
start_edges
connect_all "$top"
echo "  logged in after ${login_total} s (per edge: ${login_s[*]})"
sleep 3
stop_sims
stop_edges

# --- soak --------------------------------------------------------------------------------

metric_sum() { # edge, sample name prefix: the sum of the edge's samples of it
  { api "$1" /metrics || true; } | awk -v m="$2" 'index($1, m) == 1 { s += $2 } END { print s + 0 }'
}

# Holds every device for soak_s seconds: heartbeats, status reports every 60 s and one
# command a second across the fleet, each to a random device. A device that lost its
# session logs in again, so the edges' login counters count the disconnects.
soak() {
  local i p t started logins0=() closed0=() rss0=() rssmax=() clients=() out
  start_edges
  connect_all "$top"
  echo "$mode: $top devices logged in after $login_total s; holding them for $soak_s s"
  sleep 5
  for ((i = 0; i < edges; i++)); do
    logins0+=("$(metric_sum "$i" 'device_logins_total{outcome="ok"}')")
    closed0+=("$(metric_sum "$i" device_sessions_closed_total)")
    rss0+=("$(rss_kib "${edge_pids[i]}")")
    rssmax+=("${rss0[i]}")
  done
  for ((i = 0; i < edges; i++)); do
    local tls=()
    [[ $mode == tls ]] && tls=(--ca "$(ca_of "$i")")
    BENCH_SITE_PASSWORD=$password "$rtt_bin" --site "$(site "$i")" "${tls[@]}" \
      --credentials "$work/devices-$i.csv" --devices "${want[i]}" --random --warmup 0 \
      --every-ms $((1000 * edges)) --commands $((soak_s / edges > 0 ? soak_s / edges : 1)) \
      >"$work/soak-$i.out" 2>&1 &
    clients+=("$!")
  done
  helper_pids+=("${clients[@]}")
  started=$SECONDS
  while ((SECONDS - started < soak_s)); do
    sleep 10
    for ((i = 0; i < edges; i++)); do
      t=$(rss_kib "${edge_pids[i]}")
      ((t > rssmax[i])) && rssmax[i]=$t
    done
    printf '\r  %d/%d s' $((SECONDS - started)) "$soak_s"
  done
  echo
  for p in "${clients[@]}"; do wait_for 60 gone "$p" || kill "$p" 2>/dev/null || true; done
  printf '%-6s %-6s %9s %11s %13s %9s %9s %11s %11s %11s %9s\n' mode edge sessions disconnects \
    "edge closed" "cmds ok" failed "RSS start" "RSS max" "RSS end" drift
  for ((i = 0; i < edges; i++)); do
    out=$(cat "$work/soak-$i.out")
    local ok=- failed=-
    [[ $out =~ commands=([0-9]+)\ failed=([0-9]+) ]] && ok=${BASH_REMATCH[1]} failed=${BASH_REMATCH[2]}
    t=$(rss_kib "${edge_pids[i]}")
    printf '%-6s %-6s %9s %11s %13s %9s %9s %9s K %9s K %9s K %8s%%\n' "$mode" "edge$i" "$(sessions "$i")" \
      $(($(metric_sum "$i" 'device_logins_total{outcome="ok"}') - logins0[i])) \
      $(($(metric_sum "$i" device_sessions_closed_total) - closed0[i])) "$ok" "$failed" \
      "${rss0[i]}" "${rssmax[i]}" "$t" "$(awk -v a="${rss0[i]}" -v b="$t" 'BEGIN { printf "%+.1f", (b - a) * 100 / a }')"
  done
  stop_sims
  stop_edges
}

if ((soak_s > 0)); then
  echo "disconnects: logins after the fleet was up (each lost session logs in again); edge closed:"
  echo "sessions the edge ended; commands: get_status, one a second across the fleet"
  for mode in "${modes[@]}"; do soak; done
  exit 0
fi

# --- measuring -------------------------------------------------------------------------

cpu_pct() { awk -v a="$1" -v b="$2" -v hz="$hz" -v s="$cpu_s" 'BEGIN { printf "%.1f", (b - a) * 100 / (hz * s) }'; }
percentiles() { # file of ms samples -> "p50 p99"
  sort -n "$1" | awk '{ v[NR] = $1 } END {
    if (NR == 0) { printf "%8s %8s", "-", "-"; exit }
    i50 = int(NR * 0.50 + 0.999); i99 = int(NR * 0.99 + 0.999)
    printf "%8.2f %8.2f", v[i50], v[i99] }'
}
row() { printf '%-6s %-6s %9s %9s %10s %12s %9s %9s %8s %8s\n' "$@"; }

measure() { # size
  local n=$1 i p base=() rss=() e0=() e1=() s0=() s1=() got=() out fails=()
  start_edges
  # Warm-up: sessions opened and closed, so that the baseline holds what the first
  # sessions allocate once (runtime threads, TLS, database pool, event writer).
  connect_all $((warmup * edges < n ? warmup * edges : n))
  stop_sims
  sleep 1
  for ((i = 0; i < edges; i++)); do base+=("$(rss_kib "${edge_pids[i]}")"); done

  connect_all "$n"
  # Steady state: logins done, the first status reports (at connect) written, the next
  # ones 60 s away; what remains is the two-way heartbeat.
  sleep 5
  for ((i = 0; i < edges; i++)); do
    e0+=("$(ticks "${edge_pids[i]}")")
    # shellcheck disable=SC2086 # a list of PIDs
    s0+=("$(ticks ${sims_of[i]:-})")
  done
  sleep "$cpu_s"
  for ((i = 0; i < edges; i++)); do
    e1+=("$(ticks "${edge_pids[i]}")")
    # shellcheck disable=SC2086
    s1+=("$(ticks ${sims_of[i]:-})")
    rss+=("$(rss_kib "${edge_pids[i]}")")
    got+=("$(sessions "$i")")
  done

  : >"$work/rtt-all"
  for ((i = 0; i < edges; i++)); do
    local tls=()
    [[ $mode == tls ]] && tls=(--ca "$(ca_of "$i")")
    : >"$work/rtt-$i"
    out=$(BENCH_SITE_PASSWORD=$password timeout 300 "$rtt_bin" --site "$(site "$i")" "${tls[@]}" \
      --credentials "$work/devices-$i.csv" --devices "${want[i]}" --commands "$commands" \
      --samples "$work/rtt-$i" 2>&1) || true
    cat "$work/rtt-$i" >>"$work/rtt-all"
    if [[ $out =~ failed=([0-9]+) ]]; then
      ((BASH_REMATCH[1] == 0)) || fails+=("edge$i: ${BASH_REMATCH[1]} of $commands commands failed")
    else
      fails+=("edge$i: the command client failed: ${out//$'\n'/ }")
    fi
  done

  # A restart: every edge killed (-9) and started again over its database, while the
  # simulators redial with their backoff; timed from the start until each edge holds
  # its share again.
  local back=() started
  for ((i = 0; i < edges; i++)); do kill -9 "${edge_pids[i]}" 2>/dev/null || true; done
  for ((i = 0; i < edges; i++)); do wait "${edge_pids[i]}" 2>/dev/null || true; done
  started=$(now)
  start_edges
  for ((i = 0; i < edges; i++)); do
    if wait_for $((60 + want[i] / 200)) holds_its_share "$i"; then
      back+=("$(since "$started")")
    else
      back+=("timeout($(sessions "$i")/${want[i]})")
    fi
  done

  local handshakes=()
  if [[ $mode == tls ]]; then
    for ((i = 0; i < edges; i++)); do
      handshakes+=("edge$i after the restart, TLS handshakes: $({ api "$i" /metrics || true; } |
        awk '/^device_tls_handshakes_total/ { match($0, /kind="[a-z]+"/)
          printf "%s %s  ", substr($0, RSTART + 6, RLENGTH - 7), $2 }')")
    done
  fi

  local tb=0 tr=0 tg=0 te0=0 te1=0 ts0=0 ts1=0
  for ((i = 0; i < edges; i++)); do
    # shellcheck disable=SC2046 # two numbers
    row "$mode" "edge$i" "${got[i]}" "${login_s[i]}" "${back[i]}" \
      "$(awk -v r="${rss[i]}" -v b="${base[i]}" -v n="${got[i]}" 'BEGIN { if (n > 0) printf "%.2f", (r - b) / n; else print "-" }')" \
      "$(cpu_pct "${e0[i]}" "${e1[i]}")" "$(cpu_pct "${s0[i]}" "${s1[i]}")" $(percentiles "$work/rtt-$i")
    tb=$((tb + base[i])) tr=$((tr + rss[i])) tg=$((tg + got[i]))
    te0=$((te0 + e0[i])) te1=$((te1 + e1[i])) ts0=$((ts0 + s0[i])) ts1=$((ts1 + s1[i]))
  done
  if ((edges > 1)); then
    # shellcheck disable=SC2046
    row "$mode" total "$tg" "$login_total" "${back[$((edges - 1))]}" \
      "$(awk -v r="$tr" -v b="$tb" -v n="$tg" 'BEGIN { if (n > 0) printf "%.2f", (r - b) / n; else print "-" }')" \
      "$(cpu_pct "$te0" "$te1")" "$(cpu_pct "$ts0" "$ts1")" $(percentiles "$work/rtt-all")
  fi
  for p in "${handshakes[@]}"; do echo "  $p"; done
  for p in "${fails[@]}"; do echo "  ! $p"; done
  stop_sims
  stop_edges
}

echo
echo "login: until every device is logged in (several edges: filled one after another, the total"
echo "for all); restart: from starting the edges again after kill -9 until every device is back; RSS: edge memory per session above a baseline"
echo "after $warmup warm-up sessions; CPU: % of one core over ${cpu_s} s of idle, heartbeating"
echo "sessions (edge and its simulators); RTT: $commands get_status commands per edge, site API -> device -> site API"
row mode edge sessions "login s" "restart s" "KiB/session" "edge CPU%" "sims CPU%" "p50 ms" "p99 ms"
for mode in "${modes[@]}"; do
  for n in "${sizes[@]}"; do measure "$n"; done
done
echo "open-file limit: $limit per process (hard); the single-edge top size is bounded by it"
