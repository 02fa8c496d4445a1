#!/bin/sh
# MariaDB first-start script (mounted into /docker-entrypoint-initdb.d/): one database
# per node, each with a user of its own that can reach only that database, as the
# seeds lay out the storage. The SQL lives here rather than in a .sql file so that the
# passwords come from the stack's environment (deploy/.env) and are written once.
#
# FLEET_DATABASES lists "name:password" pairs; the user is named like its database.
# Names are [a-z0-9_] and passwords [A-Za-z0-9_-], which keeps them safe both inside
# SQL literals and inside the nodes' database URLs.
#
# The image sources a non-executable script into its own shell: everything runs in a
# subshell so that neither `set -eu` nor `exit` leaks into the image's entrypoint.
fleet_init() (
    set -eu
    : "${FLEET_DATABASES:?FLEET_DATABASES is required (name:password …)}"
    : "${MARIADB_ROOT_PASSWORD:?MARIADB_ROOT_PASSWORD is required}"
    umask 077
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    # Through a defaults file, so the root password does not appear in `ps`.
    printf '[client]\nuser=root\npassword=%s\n' "$MARIADB_ROOT_PASSWORD" >"$work/root.cnf"
    : >"$work/init.sql"
    for pair in $FLEET_DATABASES; do
        name=${pair%%:*}
        password=${pair#*:}
        case $name in
            '' | *[!a-z0-9_]*) echo "mariadb-init: bad database name '$name'" >&2; exit 1 ;;
        esac
        case $password in
            '' | *[!A-Za-z0-9_-]*) echo "mariadb-init: bad password for '$name'" >&2; exit 1 ;;
        esac
        [ "$name" != "$pair" ] || { echo "mariadb-init: '$name' has no password" >&2; exit 1; }
        # The node's migrations create its tables at start and change them in later
        # versions: it needs DDL on its own database, nothing on any other. A binary
        # collation compares unique keys (serial numbers, names) the way SQLite does, so
        # a row an SQLite edge accepted is not refused when it reaches a MySQL center.
        cat >>"$work/init.sql" <<EOF
CREATE DATABASE IF NOT EXISTS \`$name\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
CREATE USER IF NOT EXISTS '$name'@'%' IDENTIFIED BY '$password';
GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX ON \`$name\`.* TO '$name'@'%';
EOF
        echo "mariadb-init: database and user $name"
    done
    mariadb --defaults-extra-file="$work/root.cnf" --protocol=socket <"$work/init.sql"
)
fleet_init
