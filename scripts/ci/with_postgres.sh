#!/usr/bin/env bash
# Runs a command beside a throwaway PostgreSQL cluster (Debian's `postgresql`
# package): initdb in a fresh temporary directory, the server on 127.0.0.1 at
# a free port (its socket in that directory too), and the connection string
# exported as RUSTYNET_TEST_POSTGRES (key=value form) for the command. The
# cluster is stopped and its directory removed when the script exits, also
# when the command fails or the script is interrupted. The server runs at the
# lowest CPU priority, without fsync (nothing in it outlives the run), with
# trust authentication on loopback only (a test cluster; no password to leak).
#
# Usage: scripts/ci/with_postgres.sh COMMAND [ARGS...]
#   e.g. scripts/ci/with_postgres.sh cargo test -p rustynet-control store::
set -euo pipefail

if [ $# -eq 0 ]; then
  echo "usage: $0 COMMAND [ARGS...]" >&2
  exit 2
fi
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
  echo "error: PostgreSQL server binaries not found under /usr/lib/postgresql (apt-get install postgresql)" >&2
  exit 1
fi
# The server refuses to run as root: as root, run it as the package's user.
as_server=()
if [ "$(id -u)" -eq 0 ]; then
  as_server=(runuser -u postgres --)
fi

dir=$(mktemp -d /tmp/rustynet-pg.XXXXXX)
chmod 700 "$dir"
if [ "$(id -u)" -eq 0 ]; then
  chown postgres: "$dir"
fi
stop() {
  if [ -f "$dir/data/postmaster.pid" ]; then
    "${as_server[@]}" "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
}
trap stop EXIT
trap 'exit 130' INT TERM

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${as_server[@]}" "$bindir/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 || {
  cat "$dir/initdb.log" >&2
  exit 1
}
if ! "${as_server[@]}" nice -n 19 "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-h 127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c max_connections=300" \
    start >/dev/null; then
  echo "error: the throwaway PostgreSQL server did not start:" >&2
  cat "$dir/server.log" >&2 || true
  exit 1
fi
echo "==> throwaway PostgreSQL on 127.0.0.1:$port ($dir)" >&2
export RUSTYNET_TEST_POSTGRES="host=127.0.0.1 port=$port user=postgres dbname=postgres"
"$@"
