#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests (Debian's postgresql 15), on 127.0.0.1 only.
#
#   scripts/postgres-test.sh start DIR PORT   # prints the database URL on its last line
#   scripts/postgres-test.sh stop DIR
#
# DIR is created and must be empty (and reachable by the `postgres` user: not under a
# private folder such as pytest's tmp_path); its data and Unix socket live there, so nothing is
# shared with a system PostgreSQL. As root the server runs as the `postgres` user (the
# server refuses to run as root). Authentication is `trust`, which is acceptable only
# because it listens on the loopback address and on a socket inside DIR.
set -euo pipefail

usage() { echo "usage: $0 start DIR PORT | stop DIR" >&2; exit 2; }
[ $# -ge 2 ] || usage
action=$1
dir=$2

bindir=${PG_BINDIR:-}
if [ -z "$bindir" ]; then
  for candidate in /usr/lib/postgresql/*/bin; do
    [ -x "$candidate/initdb" ] && bindir=$candidate
  done
fi
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
  echo "PostgreSQL server binaries not found: install them with 'apt-get install postgresql'" >&2
  exit 1
fi

as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

case "$action" in
  start)
    [ $# -eq 3 ] || usage
    port=$3
    mkdir -p "$dir"
    if [ -n "$(ls -A "$dir")" ]; then
      echo "$dir is not empty" >&2
      exit 1
    fi
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    as_owner "$bindir/initdb" -D "$dir/data" -U voicebot --auth=trust -E UTF8 \
      --no-locale --no-sync >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    # fsync stays on: the crash tests rely on what a real server does at commit.
    as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=20 -c shared_buffers=16MB" \
      start >/dev/null \
      || { cat "$dir/server.log" >&2; exit 1; }
    echo "postgresql://voicebot@127.0.0.1:$port/postgres"
    ;;
  stop)
    if [ -f "$dir/data/PG_VERSION" ]; then
      as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
      rm -rf "$dir"
    fi
    ;;
  *)
    usage
    ;;
esac
