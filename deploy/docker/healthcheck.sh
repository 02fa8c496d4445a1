#!/bin/sh
# Container health probe: asks the node's own API for /readyz, which answers 503 while
# its database is unreachable. It reads the same variables the binary does, so a
# changed listen port or plain-HTTP mode needs no change here.
#
# FLEET_HEALTH_CA names the CA to check the certificate against. Without it, the
# development CA the node generated in its data directory is used. If neither exists
# (a certificate from a CA we were not told about), the probe skips verification:
# it only talks to loopback and sends no credentials.
set -eu

case ${FLEET_BIN:-} in
    center-cloud)
        listen=${CENTER_LISTEN:-127.0.0.1:8443}
        plain=${CENTER_INSECURE_HTTP:-false}
        data=${CENTER_DATA_DIR:-./data/center}
        ;;
    edge-cloud)
        listen=${EDGE_LISTEN:-127.0.0.1:9443}
        plain=${EDGE_INSECURE_HTTP:-false}
        data=${EDGE_DATA_DIR:-./data/edge}
        ;;
    *)
        # The agent serves no HTTP endpoint. Its container stops when the agent does,
        # which is the signal to act on.
        exit 0
        ;;
esac

port=${listen##*:}
ca=${FLEET_HEALTH_CA:-$data/tls/ca.crt}

if [ "$plain" = true ]; then
    exec curl -fsS -o /dev/null --max-time 4 "http://127.0.0.1:$port/readyz"
fi
# Certificates name `localhost`; pinning it to 127.0.0.1 avoids an IPv6 detour.
if [ -r "$ca" ]; then
    exec curl -fsS -o /dev/null --max-time 4 --cacert "$ca" \
        --resolve "localhost:$port:127.0.0.1" "https://localhost:$port/readyz"
fi
exec curl -fsS -o /dev/null --max-time 4 --insecure "https://127.0.0.1:$port/readyz"
