#!/usr/bin/env bash
# Crash-recovery chaos (SPEC §7, §9): idempotent load while shopd is SIGKILLed and restarted
# 10 times in 60 s, then every answered request's effect is checked exactly once in the
# database, and the SPEC §9 invariants. On SQLite (one instance) and on PostgreSQL (three
# instances on one database, killed in turn). The driver is bench/chaos.py.
#
#   bench/chaos.sh                    # both backends, 60 s and 10 kills each
#   bench/chaos.sh sqlite             # one backend
#   CHAOS_ARGS="--duration 30 --kills 5 --clients 8" bench/chaos.sh postgres
#   CHAOS_PROFILE=release bench/chaos.sh
#
# Needs python3, and for PostgreSQL psql and a server at SHOPD_TEST_POSTGRES_URL (default
# postgres://postgres@127.0.0.1:5432/postgres; a scratch database is created and dropped).
# Exit status non-zero if any check failed on any backend; CHAOS_KEEP=1 keeps logs and database.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${CHAOS_PROFILE:-debug}
PG_URL=${SHOPD_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
BACKENDS=${*:-sqlite postgres}
if [ "$PROFILE" = release ]; then
  cargo build --locked --release --bin shopd
else
  cargo build --locked --bin shopd
fi
status=0
for backend in $BACKENDS; do
  echo "=== chaos: $backend ($PROFILE build, $(nproc) cores)"
  # shellcheck disable=SC2086 # CHAOS_ARGS is a list of flags
  if ! python3 bench/chaos.py --backend "$backend" --bin "target/$PROFILE/shopd" \
      --pg-url "$PG_URL" ${CHAOS_ARGS:-}; then
    echo "*** chaos failed on $backend"
    status=1
  fi
done
exit $status
