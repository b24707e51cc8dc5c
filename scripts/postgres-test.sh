#!/usr/bin/env bash
# postgres-test.sh — a throwaway PostgreSQL cluster for the Go tests.
#
#   scripts/postgres-test.sh [start]   install PostgreSQL if missing (apt, as root), start or reuse
#                                      the cluster, create the test database, print its DSN
#   scripts/postgres-test.sh dsn       print the DSN only (no side effects)
#   scripts/postgres-test.sh stop      stop the cluster and delete its files
#
# The cluster lives in $MEDREC_PG_DIR (default ${TMPDIR:-/tmp}/medrec-postgres-test), listens on
# 127.0.0.1:$MEDREC_PG_PORT (default 55432) and a Unix socket in that directory, trusts local
# connections, and runs with fsync off: it is for tests only, never for data. As root it runs as
# the `postgres` user. Running it again reuses a running cluster; concurrent runs take a lock.
# Only the DSN goes to standard output; progress goes to standard error.
set -euo pipefail

DIR=${MEDREC_PG_DIR:-${TMPDIR:-/tmp}/medrec-postgres-test}
PORT=${MEDREC_PG_PORT:-55432}
DB=medrec_test
DSN="postgres://postgres@127.0.0.1:${PORT}/${DB}?sslmode=disable"

log() { echo "postgres-test: $*" >&2; }
die() { log "$*"; exit 1; }

CMD=${1:-start}
case "$CMD" in
dsn) echo "$DSN"; exit 0 ;;
start | stop) ;;
*) die "usage: $0 [start|dsn|stop]" ;;
esac

# bindir: the newest installed server version's binaries (Debian layout first).
bindir() {
	local d
	for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -V -r); do
		[ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
	done
	d=$(command -v pg_ctl 2>/dev/null) && [ -x "$(dirname "$d")/initdb" ] && { dirname "$d"; return 0; }
	return 1
}

# As root, the server runs as the postgres user (initdb refuses root).
AS=()
if [ "$(id -u)" = 0 ]; then
	AS=(runuser -u postgres --)
fi
# fd 9 holds the lock: never let it leak into the server, which would hold it for ever.
as_pg() { (cd / && "${AS[@]}" "$@" 9>&-); }

mkdir -p "$(dirname "$DIR")"
exec 9>"$DIR.lock"
flock 9

if [ "$CMD" = stop ]; then
	if BIN=$(bindir) && [ -f "$DIR/data/PG_VERSION" ]; then
		as_pg "$BIN/pg_ctl" -D "$DIR/data" -m fast -w stop >&2 || true
	fi
	rm -rf "$DIR"
	log "stopped and removed $DIR"
	exit 0
fi

if ! BIN=$(bindir); then
	[ "$(id -u)" = 0 ] || die "PostgreSQL is not installed; install it (apt-get install postgresql) or run as root"
	log "installing PostgreSQL with apt-get"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2
	apt-get install -y -qq --no-install-recommends postgresql >&2
	BIN=$(bindir) || die "PostgreSQL installed but no initdb/pg_ctl found"
fi
VERSION=$("$BIN/pg_ctl" --version | awk '{print $NF}' | cut -d. -f1)

if [ "${#AS[@]}" -gt 0 ]; then
	id postgres >/dev/null 2>&1 || die "running as root but there is no postgres user"
fi
mkdir -p "$DIR"
[ "${#AS[@]}" -gt 0 ] && chown postgres: "$DIR"
chmod 700 "$DIR"

if as_pg "$BIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
	log "reusing the running cluster in $DIR (PostgreSQL $VERSION, port $PORT)"
else
	if [ "$(cat "$DIR/data/PG_VERSION" 2>/dev/null)" != "$VERSION" ]; then
		# Missing, half-made or from another major version: it is throwaway, start afresh.
		rm -rf "$DIR/data"
		log "initdb (PostgreSQL $VERSION) in $DIR/data"
		as_pg "$BIN/initdb" -D "$DIR/data" -U postgres -A trust -E UTF8 --locale=C --no-sync >"$DIR/initdb.log" 2>&1 ||
			{ cat "$DIR/initdb.log" >&2; die "initdb failed"; }
	fi
	log "starting PostgreSQL $VERSION on 127.0.0.1:$PORT"
	if ! as_pg "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 \
		-o "-k $DIR -p $PORT -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
		start >&2; then
		tail -n 20 "$DIR/server.log" >&2 || true
		die "the server did not start (is port $PORT taken? set MEDREC_PG_PORT)"
	fi
fi

psql_pg() { as_pg "$BIN/psql" -h "$DIR" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
if [ "$(psql_pg -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != 1 ]; then
	psql_pg -c "CREATE DATABASE $DB" >&2
	log "created database $DB"
fi
echo "$DSN"
