#!/usr/bin/env bash
# Runs bursora-server's tests against a throwaway Postgres: installs Postgres with apt if it is
# missing, creates a cluster in a temp directory on a free port (as the `postgres` user when run
# as root), exports BURSORA_TEST_DATABASE_URL, runs the tests, then stops and deletes the cluster.
# Extra arguments go to `cargo test`, e.g. `scripts/pg-test.sh race`; `--run CMD ARGS...` runs
# CMD instead (scripts/test.sh runs the whole suite this way).
# BURSORA_PG_DURABLE=1 keeps Postgres's durable defaults (fsync on, synchronous_commit on: every
# COMMIT waits for its WAL flush, as on a user's server) instead of the fast test settings.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "== installing postgresql (apt)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)

# initdb refuses to run as root: run the server as `postgres` then.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

dir=$(mktemp -d /tmp/bursora-pg.XXXXXX)
[ "$(id -u)" = 0 ] && chown postgres: "$dir"
# A free port: one nothing answers on (bash's /dev/tcp, so no python or netcat is needed).
port=
for _ in $(seq 1 50); do
  p=$((20000 + RANDOM % 40000))
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then port=$p; break; fi
done
[ -n "$port" ] || { echo "no free port found" >&2; exit 1; }

stop() {
  as_pg "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap stop EXIT

# A test cluster: durability off (fsync) for speed unless asked; enough connections for two
# replicas' pools.
if [ "${BURSORA_PG_DURABLE:-}" = 1 ]; then
  durability="fsync=on, synchronous_commit=on (durable)"
  settings="-c fsync=on -c synchronous_commit=on"
else
  durability="fsync=off, synchronous_commit=off (not durable)"
  settings="-c fsync=off -c synchronous_commit=off"
fi
echo "== postgres $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port ($dir), $durability"
as_pg "$bin/initdb" -D "$dir/data" -U postgres -A trust --no-sync >/dev/null
as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -s \
  -o "-p $port -k $dir -c listen_addresses=127.0.0.1 $settings -c max_connections=200" start
as_pg "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres bursora_test

export BURSORA_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/bursora_test"
# For the bench: the cluster's processes (CPU per reservation) and how durable it is.
export BURSORA_TEST_PG_DATA="$dir/data" BURSORA_TEST_PG_DURABILITY="$durability"
if [ "${1:-}" = "--run" ]; then
  shift
  "$@"
else
  cargo test -p bursora-server "$@"
fi
