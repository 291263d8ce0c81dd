#!/usr/bin/env bash
# N identical shopd instances on one PostgreSQL database (SPEC §13: "any number of identical
# instances"), the load generator's clients spread over them round robin; then the deadlocks
# PostgreSQL detected in that database during the run (pg_stat_database) and the committers'
# lock retries. Usage:
#
#   bench/multi-instance.sh [N=3] [SCENARIO=uniform-orders] [shopd-bench args...]
#   bench/multi-instance.sh 3 flash-sale --members 8000 --stock 100000000   # hot row
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-3}
SCENARIO=${2:-uniform-orders}
shift $(( $# >= 2 ? 2 : $# ))
[ $# -eq 0 ] && [ "$SCENARIO" = uniform-orders ] && set -- --duration 10s
TOKEN=bench-admin-token
DB=shopd_bench_multi
URL="postgres://postgres@127.0.0.1:5432/$DB"
cargo build --release -q -p shopd -p shopd-bench
psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" 2>&1 | grep -v NOTICE || true
target/release/shopd migrate --database-url "$URL" >/dev/null
WORK=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
URLS=()
for i in $(seq 1 "$N"); do
  PORT=$((18280 + i))
  RUST_LOG=info target/release/shopd serve --listen "127.0.0.1:$PORT" --database-url "$URL" \
    --admin-token "$TOKEN" >"$WORK/serve-$i.log" 2>&1 &
  PIDS+=($!)
  URLS+=("http://127.0.0.1:$PORT")
done
for u in "${URLS[@]}"; do
  for _ in $(seq 1 50); do curl -sf "$u/readyz" >/dev/null && break; sleep 0.2; done
done
deadlocks() { psql -tA -h 127.0.0.1 -U postgres -c "SELECT deadlocks FROM pg_stat_database WHERE datname = '$DB'"; }
before=$(deadlocks)
ALSO=()
for u in "${URLS[@]:1}"; do ALSO+=(--also-url "$u"); done
echo "== $SCENARIO on $N PostgreSQL instances ($(nproc) cores)"
target/release/shopd-bench "$SCENARIO" --url "${URLS[0]}" "${ALSO[@]}" --admin-token "$TOKEN" "$@"
status=$?
sleep 1 # pg_stat_database is updated when a backend reports its statistics
echo "deadlocks detected by PostgreSQL during the run: $(( $(deadlocks) - before ))"
retries=0
for u in "${URLS[@]}"; do
  r=$(curl -sf "$u/metrics" | awk '/^shopd_commit_lock_retries_total/ {s += $2} END {print s + 0}')
  retries=$((retries + r))
done
echo "committer lock retries (all instances): $retries"
echo "server log lines mentioning a deadlock: $(cat "$WORK"/serve-*.log | grep -ci deadlock || true)"
exit $status
