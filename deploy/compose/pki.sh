#!/bin/sh
# Certificates for the compose stack: one CA, and a server certificate per node.
#
#   pki.sh DIR:NAME[,NAME…] …
#
# Each node generates a development CA of its own when given no certificate, so the
# center, both edges and the simulators would each need a different CA file. One CA
# for the whole stack keeps that to a single public file, in PKI_PUBLIC_DIR, that every
# container may read. The CA key stays in PKI_CA_DIR, which only this job mounts.
# Each DIR receives server.crt and server.key (owned by PKI_OWNER, the image's user),
# valid for the NAMEs (DNS names, or IP addresses).
#
# Runs again harmlessly: the CA is kept, and a certificate is issued again only when
# it is missing, its names changed, or it expires within 30 days.
set -eu

ca_dir=${PKI_CA_DIR:-/pki/ca-private}
public_dir=${PKI_PUBLIC_DIR:-/pki/public}
owner=${PKI_OWNER:-10001:10001}
days=${PKI_DAYS:-825}

[ "$#" -gt 0 ] || {
    echo "usage: pki.sh DIR:NAME[,NAME…] …" >&2
    exit 64
}

umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mkdir -p "$ca_dir" "$public_dir"
if [ ! -s "$ca_dir/ca.key" ] || [ ! -s "$ca_dir/ca.crt" ]; then
    cat >"$work/ca.cnf" <<'EOF'
[req]
distinguished_name = dn
x509_extensions = ca
prompt = no
[dn]
CN = Fleet compose CA
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
    openssl req -x509 -new -config "$work/ca.cnf" -days 3650 -nodes \
        -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -keyout "$ca_dir/ca.key" -out "$ca_dir/ca.crt" 2>/dev/null
    echo "pki: created the stack CA"
fi
cp "$ca_dir/ca.crt" "$public_dir/ca.crt"
chmod 0644 "$public_dir/ca.crt"
chmod 0755 "$public_dir"

for spec in "$@"; do
    dir=${spec%%:*}
    names=${spec#*:}
    if [ -z "$dir" ] || [ -z "$names" ] || [ "$dir" = "$spec" ]; then
        echo "pki: bad argument '$spec' (want DIR:NAME[,NAME…])" >&2
        exit 64
    fi
    mkdir -p "$dir"
    if [ -s "$dir/server.crt" ] && [ -s "$dir/server.key" ] &&
        [ "$(cat "$dir/names" 2>/dev/null)" = "$names" ] &&
        openssl x509 -in "$dir/server.crt" -noout -checkend 2592000 >/dev/null &&
        openssl verify -CAfile "$ca_dir/ca.crt" "$dir/server.crt" >/dev/null 2>&1; then
        continue
    fi
    san=""
    first=""
    old_ifs=$IFS
    IFS=,
    for name in $names; do
        [ -n "$first" ] || first=$name
        case $name in
            *[!0-9.]* ) entry="DNS:$name" ;;
            *) entry="IP:$name" ;;
        esac
        case $name in
            *:*) entry="IP:$name" ;;
        esac
        san=${san:+$san,}$entry
    done
    IFS=$old_ifs
    cat >"$work/leaf.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
CN = $first
[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = $san
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
    openssl req -new -config "$work/leaf.cnf" -nodes \
        -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -keyout "$work/server.key" -out "$work/server.csr" 2>/dev/null
    openssl x509 -req -in "$work/server.csr" -days "$days" \
        -CA "$ca_dir/ca.crt" -CAkey "$ca_dir/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
        -extfile "$work/leaf.cnf" -extensions leaf -out "$work/server.crt" 2>/dev/null
    mv "$work/server.key" "$dir/server.key"
    mv "$work/server.crt" "$dir/server.crt"
    printf '%s\n' "$names" >"$dir/names"
    # Modes before owners: once a file is the nodes' user's, changing its mode would
    # take one more capability.
    chmod 0600 "$dir/server.key"
    chmod 0644 "$dir/server.crt" "$dir/names"
    chmod 0755 "$dir"
    chown "$owner" "$dir" "$dir/server.key" "$dir/server.crt" "$dir/names"
    echo "pki: issued a certificate for $names in $dir"
done
