#!/usr/bin/env bash
# One command per scenario: start a fresh shopd (release build) on a fresh database, run
# shopd-bench against it, stop the server. Exit status is shopd-bench's (non-zero when the
# scenario's invariant fails).
#
#   bench/run.sh sqlite uniform-orders --duration 20s
#   bench/run.sh postgres flash-sale --members 10000 --stock 1000
#
# Extra arguments go to shopd-bench (see `shopd-bench --help`). SHOPD_SERVER_BIN runs another
# server binary (an A/B comparison of two builds in one session), SHOPD_BENCH_BIN another load
# generator. PostgreSQL uses a scratch
# database `shopd_bench` on 127.0.0.1:5432 (dropped and recreated).
set -euo pipefail
cd "$(dirname "$0")/.."
BACKEND=${1:?sqlite or postgres}
SCENARIO=${2:?scenario}
shift 2
PORT=${SHOPD_BENCH_PORT:-18180}
TOKEN=bench-admin-token
# shopd-bench is its own workspace member: build both packages.
cargo build --release -q -p shopd -p shopd-bench
WORK=$(mktemp -d)
case "$BACKEND" in
  sqlite) URL="sqlite://$WORK/shopd.db" ;;
  postgres)
    psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS shopd_bench" -c "CREATE DATABASE shopd_bench" 2>&1 | grep -v NOTICE || true
    URL="postgres://postgres@127.0.0.1:5432/shopd_bench" ;;
  *) echo "backend must be sqlite or postgres" >&2; exit 64 ;;
esac
RUST_LOG=warn "${SHOPD_SERVER_BIN:-target/release/shopd}" serve --listen "127.0.0.1:$PORT" --database-url "$URL" --admin-token "$TOKEN" \
  >"${SHOPD_BENCH_SERVER_LOG:-$WORK/serve.log}" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.2; done
echo "== $SCENARIO on $BACKEND ($(nproc) cores)"
"${SHOPD_BENCH_BIN:-target/release/shopd-bench}" "$SCENARIO" --url "http://127.0.0.1:$PORT" --admin-token "$TOKEN" "$@"
