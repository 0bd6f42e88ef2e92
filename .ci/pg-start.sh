#!/usr/bin/env bash
# Starts a throwaway PostgreSQL (Debian's `postgresql` package, installed if missing) on
# 127.0.0.1:$PGPORT with its data under $PGTMP, for the store tests. Prints three lines:
#   DATABASE_URL=postgres://postgres@127.0.0.1:PORT/postgres
#   PID=<postmaster pid>
#   PG_DIR=<$PGTMP: delete it once the server is gone>
# Stop it with: kill -INT <pid> (fast shutdown). initdb refuses to run as root, so the server
# runs as the `postgres` user; $PGTMP must be traversable by it.
set -euo pipefail
PGPORT=${PGPORT:-15432}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$PGBIN" ] || [ ! -x "$PGBIN/initdb" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi
PGTMP=${PGTMP:-$(mktemp -d /tmp/cargohold-pg.XXXXXX)}
chmod 755 "$PGTMP"
as_postgres() {
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$PGTMP"
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}
as_postgres "$PGBIN/initdb" -D "$PGTMP/data" -A trust -U postgres --no-sync -E UTF8 --no-locale >"$PGTMP/initdb.log"
as_postgres "$PGBIN/pg_ctl" -D "$PGTMP/data" -l "$PGTMP/server.log" -w -t 30 \
    -o "-h 127.0.0.1 -p $PGPORT -k $PGTMP -c fsync=off" start >/dev/null
echo "DATABASE_URL=postgres://postgres@127.0.0.1:$PGPORT/postgres"
echo "PID=$(head -1 "$PGTMP/data/postmaster.pid")"
echo "PG_DIR=$PGTMP"
