#!/usr/bin/env bash
# Baseline: run the order transaction straight on PostgreSQL with pgbench, at the same
# concurrency as shopd-bench. Usage: bench/raw-postgres.sh [clients] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${1:-64}
SECONDS_=${2:-20}
DB=shopd_raw_bench
PSQL="psql -q -h 127.0.0.1 -U postgres"
$PSQL -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
cargo run --release -q --bin shopd -- migrate --database-url "postgres://postgres@127.0.0.1:5432/$DB" >/dev/null
$PSQL -d $DB <<'SQL'
INSERT INTO users (name, token_hash, balance, balance_updated_at, created_at)
  SELECT 'raw-' || i, 'hash-' || i, 10000000, now(), now() FROM generate_series(1, 10000) i;
INSERT INTO products (name, price, status, stock, created_at, updated_at)
  SELECT 'raw product ' || i, 1000, 'ON_SALE', 100000000, now(), now() FROM generate_series(1, 1000) i;
VACUUM ANALYZE;
SQL
for script in order flash; do
  echo "== pgbench $script: $CLIENTS clients, ${SECONDS_}s"
  pgbench -h 127.0.0.1 -U postgres -n -c "$CLIENTS" -j 2 -T "$SECONDS_" -f "bench/pgbench_$script.sql" $DB | grep -E "^(tps|latency|number of (transactions|failed))"
done
