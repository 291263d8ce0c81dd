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
    explain() { sqlite3 "$WORK/shopd.db" "EXPLAIN QUERY PLAN $1"; }
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
    explain() { psql -h 127.0.0.1 -U postgres -d $DB -At -c "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF, SUMMARY OFF) $1"; }
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

# The plans of the statements store::admin runs (the literals stand for the bound parameters).
if [ "$BACKEND" = sqlite ]; then
  F="'1970-01-01T00:00:00+00:00'"; T="'9999-12-31T23:59:59+00:00'"; W1="'2026-06-01T00:00:00+00:00'"; W2="'2026-06-02T00:00:00+00:00'"; C="'2026-03-01T12:00:00+00:00'"
else
  F="'1970-01-01T00:00:00Z'::timestamptz"; T="'9999-12-31T23:59:59Z'::timestamptz"; W1="'2026-06-01T00:00:00Z'::timestamptz"; W2="'2026-06-02T00:00:00Z'::timestamptz"; C="'2026-03-01T12:00:00Z'::timestamptz"
fi
COLS="id, user_id, status, from_cart, subtotal, discount, total, user_coupon_id, coupon_id, expires_at, created_at, updated_at, paid_at"
# No cursor: the upper bound is `to` with id bound 0; a deep page: a cursor's (created_at, id).
q1() { echo "SELECT $COLS FROM orders WHERE $1 created_at >= $2 AND created_at <= $3 AND (created_at < $3 OR id < $4) ORDER BY created_at DESC, id DESC LIMIT 21"; }
# No filter (store::admin::ALL_STATUSES_PAGE_*): each status's rows merged (SQLite), or one
# lateral page per status, sorted (PostgreSQL).
STATUSES="PENDING PAID CONFIRMED PARTIALLY_REFUNDED REFUNDED CANCELLED EXPIRED"
q_all() {
  local sql="" s
  if [ "$BACKEND" = postgres ]; then
    echo "SELECT page.* FROM unnest('{$(echo $STATUSES | tr ' ' ,)}'::text[]) AS s(status) CROSS JOIN LATERAL ($(q1 "orders.status = s.status AND" "$2" "$3" "$4")) AS page ORDER BY created_at DESC, id DESC LIMIT 21"
    return
  fi
  for s in $STATUSES; do
    [ -n "$sql" ] && sql="$sql UNION ALL "
    sql="${sql}SELECT $COLS FROM orders WHERE status = '$s' AND created_at >= $2 AND created_at <= $3 AND (created_at < $3 OR id < $4)"
  done
  echo "$sql ORDER BY created_at DESC, id DESC LIMIT 21"
}
q() { if [ -z "$1" ]; then q_all "$@"; else q1 "$@"; fi; }
for case in "none|" "status|status = 'PAID' AND" "userId|user_id = 4242 AND" "userId+status|user_id = 4242 AND (status || '') = 'PAID' AND"; do
  name=${case%%|*}; filter=${case#*|}
  echo "-- plan: orders, filter $name, first page"; explain "$(q "$filter" "$F" "$T" 0)"
  echo "-- plan: orders, filter $name, deep page (cursor)"; explain "$(q "$filter" "$F" "$C" 172800)"
  echo "-- plan: orders, filter $name, from/to one day"; explain "$(q "$filter" "$W1" "$W2" 0)"
done
# Member search (store::admin::list_members): a term of 3+ characters goes to the trigram index.
if [ "$BACKEND" = sqlite ]; then
  echo "-- plan: members, q=member 4242 (FTS5 trigram table, id order from the cursor)"
  explain "SELECT u.id, u.name, u.balance, u.created_at FROM users_name_search s JOIN users u ON u.id = s.rowid WHERE users_name_search MATCH '\"member 4242\"' AND s.rowid > 0 AND u.name_folded LIKE '%member 4242%' ESCAPE '\\' ORDER BY s.rowid LIMIT 21"
else
  for term in 'member 4242' zzz kim; do
    echo "-- plan: members, q=$term (planned with the term: trigram index for a rare one, primary key for a common one)"
    explain "SELECT id, name, balance, created_at FROM users WHERE id > 0 AND name_folded LIKE '%$term%' ESCAPE '\\' ORDER BY id LIMIT 21"
  done
fi
echo "-- plan: members, q=zz (under 3 characters: the primary key is walked until a page of matches)"
explain "SELECT id, name, balance, created_at FROM users WHERE id > 0 AND name_folded LIKE '%zz%' ESCAPE '\\' ORDER BY id LIMIT 21"
