#!/usr/bin/env bash
# Back-office list latency (SPEC §15, issue #15): seed members and orders straight through SQL
# (no HTTP), start a release shopd on that database, time admin list pages over HTTP, and print
# the query plans.
#
#   bench/admin-lists.sh sqlite            # 1,000,000 orders, 100,000 members
#   bench/admin-lists.sh postgres
#   ORDERS=200000 bench/admin-lists.sh sqlite
#   ORDERS=1000 ONLY=members bench/admin-lists.sh postgres   # the member search only
#
# PostgreSQL uses a scratch database `shopd_bench_admin` on 127.0.0.1:5432 (dropped first).
set -euo pipefail
cd "$(dirname "$0")/.."
BACKEND=${1:?sqlite or postgres}
ORDERS=${ORDERS:-1000000}
MEMBERS=${MEMBERS:-100000}
REQUESTS=${REQUESTS:-300}
PORT=${SHOPD_BENCH_PORT:-18181}
TOKEN=bench-admin-token
cargo build --release -q -p shopd
WORK=$(mktemp -d)
SERVER=
trap '[ -n "$SERVER" ] && kill $SERVER 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT

# Orders: one every 30 s from 2026-01-01 (a million span 347 days), members round-robin with a
# stride, 85% PAID, 5% PENDING (expiring in 2099: the sweeper leaves them alone), 7% CANCELLED,
# 3% EXPIRED. Members: five surnames in turn ("Kim member 17", ...), balances spread.
status_sql="CASE WHEN i % 100 < 85 THEN 'PAID' WHEN i % 100 < 90 THEN 'PENDING' WHEN i % 100 < 97 THEN 'CANCELLED' ELSE 'EXPIRED' END"
name_sql="(CASE i % 5 WHEN 0 THEN 'Kim' WHEN 1 THEN 'Lee' WHEN 2 THEN 'Park' WHEN 3 THEN 'Choi' ELSE 'Jung' END) || ' member ' || i"
t0=$(date +%s)
case "$BACKEND" in
  sqlite)
    URL="sqlite://$WORK/shopd.db"
    target/release/shopd migrate --database-url "$URL" >/dev/null
    sqlite3 "$WORK/shopd.db" <<SQL
PRAGMA synchronous = OFF;
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $MEMBERS)
INSERT INTO users (id, name, name_folded, token_hash, balance, balance_updated_at, created_at)
SELECT i, $name_sql, lower($name_sql), 'seed-' || i, (i * 37) % 100000, '2026-01-01T00:00:00+00:00', '2026-01-01T00:00:00+00:00' FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $ORDERS)
INSERT INTO orders (id, user_id, status, from_cart, subtotal, discount, total, expires_at, created_at, updated_at, paid_at)
SELECT i, 1 + (i * 7919) % $MEMBERS, $status_sql, 0, 1000, 0, 1000, '2099-01-01T00:00:00+00:00', ts, ts,
       CASE WHEN i % 100 < 85 THEN ts END
FROM (SELECT i, strftime('%Y-%m-%dT%H:%M:%S', 1767225600 + i * 30, 'unixepoch') || '+00:00' AS ts FROM n);
COMMIT;
SQL
    ;;
  postgres)
    DB=shopd_bench_admin
    psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" 2>&1 | grep -v NOTICE || true
    URL="postgres://postgres@127.0.0.1:5432/$DB"
    target/release/shopd migrate --database-url "$URL" >/dev/null
    psql -q -h 127.0.0.1 -U postgres -d $DB -v ON_ERROR_STOP=1 <<SQL
INSERT INTO users (id, name, name_folded, token_hash, balance, balance_updated_at, created_at)
SELECT i, $name_sql, lower($name_sql), 'seed-' || i, (i * 37) % 100000, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z'
FROM generate_series(1, $MEMBERS) AS i;
INSERT INTO orders (id, user_id, status, from_cart, subtotal, discount, total, expires_at, created_at, updated_at, paid_at)
SELECT i, 1 + (i::bigint * 7919) % $MEMBERS, $status_sql, false, 1000, 0, 1000, '2099-01-01T00:00:00Z', ts, ts,
       CASE WHEN i % 100 < 85 THEN ts END
FROM (SELECT i, to_timestamp(1767225600 + i::bigint * 30) AS ts FROM generate_series(1, $ORDERS) AS i) s;
SELECT setval(pg_get_serial_sequence('users', 'id'), $MEMBERS);
SELECT setval(pg_get_serial_sequence('orders', 'id'), $ORDERS);
VACUUM ANALYZE users;
VACUUM ANALYZE orders;
SQL
    ;;
  *) echo "backend must be sqlite or postgres" >&2; exit 64 ;;
esac
echo "== $BACKEND: seeded $ORDERS orders, $MEMBERS members through SQL in $(( $(date +%s) - t0 )) s"

RUST_LOG=warn target/release/shopd serve --listen "127.0.0.1:$PORT" --database-url "$URL" --admin-token "$TOKEN" \
  >"$WORK/serve.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.2; done
sleep 2   # let the start-up jobs (ranking, sweeper) finish

python3 bench/admin_lists.py "http://127.0.0.1:$PORT" "$TOKEN" "$ORDERS" "$MEMBERS" "$REQUESTS"

# The plans of the statements store::admin runs, taken from shopd itself with sample values
# bound (`shopd explain-admin-lists`, src/store/list_plans.rs): no copy of the SQL here.
target/release/shopd explain-admin-lists --database-url "$URL"
