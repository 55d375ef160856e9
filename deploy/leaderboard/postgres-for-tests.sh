#!/usr/bin/env bash
# Start Debian's PostgreSQL (the newest installed cluster, made if missing) and make the
# leaderboard tests' role and database: postgres://observatory:observatory@127.0.0.1/observatory_test.
set -euo pipefail
if [ "$(id -u)" = 0 ]; then AS_PG="runuser -u postgres --"; else AS_PG="sudo -u postgres"; fi
version="$(ls /usr/lib/postgresql | sort -V | tail -1)"
if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -qx "$version main"; then
  pg_createcluster "$version" main >/dev/null
fi
pg_ctlcluster "$version" main start 2>/dev/null || pg_ctlcluster "$version" main status >/dev/null
for _ in $(seq 1 50); do
  $AS_PG psql -qtAc "SELECT 1" >/dev/null 2>&1 && break
  sleep 0.2
done
if [ "$($AS_PG psql -qtAc "SELECT 1 FROM pg_roles WHERE rolname = 'observatory'")" != 1 ]; then
  $AS_PG psql -qc "CREATE ROLE observatory LOGIN PASSWORD 'observatory'"
fi
if [ "$($AS_PG psql -qtAc "SELECT 1 FROM pg_database WHERE datname = 'observatory_test'")" != 1 ]; then
  $AS_PG createdb -O observatory observatory_test
fi
echo "PostgreSQL $version: postgres://observatory:***@127.0.0.1:5432/observatory_test"
