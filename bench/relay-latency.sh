#!/usr/bin/env bash
# Commit → received latency of the outbox relay (SPEC §10, issue #14): a fresh `shopd serve`
# delivering to `shopd mock-platform`, under an open loop of uniform-orders (each request pays
# one order, so one ORDER_PAID event per request). Reports:
#   - the server's `outbox_commit_to_delivery_seconds` histogram (event created_at → 2xx answer
#     seen by the relay): count, share under 5 ms and 10 ms, p99 interpolated in its bucket;
#   - the mock's own view: `occurredAt` (the payment's time, inside its transaction) → first
#     arrival, exact percentiles; the most requests it had in flight; connections it accepted.
#
#   bench/relay-latency.sh sqlite              # 1,000 orders/s for 20 s
#   bench/relay-latency.sh postgres 1000 30s
#   SHOPD_SERVER_BIN=/tmp/shopd-main bench/relay-latency.sh sqlite   # another build's server
#
# Extra arguments after RATE and DURATION go to `shopd serve` (e.g. --relay-concurrency 4).
# Exit status 1 if the relay's p99 is not under 10 ms. PostgreSQL uses a scratch database
# `shopd_bench` on 127.0.0.1:5432 (dropped and recreated).
set -euo pipefail
cd "$(dirname "$0")/.."
BACKEND=${1:?sqlite or postgres}
RATE=${2:-1000}
DURATION=${3:-20s}
shift $(( $# < 3 ? $# : 3 ))
PORT=${SHOPD_BENCH_PORT:-18180}
MOCK_PORT=${SHOPD_BENCH_MOCK_PORT:-18190}
TOKEN=bench-admin-token
cargo build --release -q -p shopd -p shopd-bench
SERVER_BIN=${SHOPD_SERVER_BIN:-target/release/shopd}
WORK=$(mktemp -d)
case "$BACKEND" in
  sqlite) URL="sqlite://$WORK/shopd.db" ;;
  postgres)
    psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS shopd_bench" -c "CREATE DATABASE shopd_bench" 2>&1 | grep -v NOTICE || true
    URL="postgres://postgres@127.0.0.1:5432/shopd_bench" ;;
  *) echo "backend must be sqlite or postgres" >&2; exit 64 ;;
esac
target/release/shopd mock-platform --listen "127.0.0.1:$MOCK_PORT" >"$WORK/mock.log" 2>&1 &
MOCK=$!
RUST_LOG=warn "$SERVER_BIN" serve --listen "127.0.0.1:$PORT" --database-url "$URL" --admin-token "$TOKEN" \
  --data-platform-url "http://127.0.0.1:$MOCK_PORT/events" "$@" >"$WORK/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER $MOCK 2>/dev/null; wait $SERVER $MOCK 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.2; done
echo "== relay latency, $BACKEND, $RATE orders/s open loop for $DURATION ($(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)), server $SERVER_BIN"
target/release/shopd-bench uniform-orders --url "http://127.0.0.1:$PORT" --admin-token "$TOKEN" \
  --members 2000 --products 200 --rate "$RATE" --duration "$DURATION" | grep -E '^(requests|latency|outcome|invariant)' 
sleep 2 # the last deliveries
curl -sf "http://127.0.0.1:$PORT/metrics" >"$WORK/metrics.txt"
curl -sf "http://127.0.0.1:$MOCK_PORT/stats" >"$WORK/stats.json"
python3 - "$WORK/metrics.txt" "$WORK/stats.json" <<'EOF'
import json, re, sys
name = "outbox_commit_to_delivery_seconds"
buckets, count = [], 0
for line in open(sys.argv[1]):
    m = re.match(name + r'_bucket\{le="([^"]+)"\} (\S+)', line)
    if m:
        buckets.append((float("inf") if m[1] == "+Inf" else float(m[1]), float(m[2])))
    elif line.startswith(name + "_count"):
        count = float(line.split()[-1])
buckets.sort()
def share(le):
    return next((c for b, c in buckets if b >= le), count) / count if count else 0.0
def quantile(q):
    target, lo, below = q * count, 0.0, 0.0
    for le, c in buckets:
        if c >= target:
            if le == float("inf"):
                return float("inf")
            return lo + (le - lo) * ((target - below) / (c - below) if c > below else 1.0)
        lo, below = le, c
    return float("nan")
stats = json.load(open(sys.argv[2]))
lat = stats.get("latencyMs", {})
p99 = quantile(0.99) * 1000
print(f"relay histogram: {int(count)} delivered; {share(0.005):.2%} <= 5 ms, {share(0.01):.2%} <= 10 ms; "
      f"p50 ~{quantile(0.5)*1000:.1f} ms, p99 ~{p99:.1f} ms (interpolated in its bucket)")
print(f"mock, occurredAt -> first arrival: n={lat.get('count', 0)} p50={lat.get('p50', 0):.2f} "
      f"p90={lat.get('p90', 0):.2f} p99={lat.get('p99', 0):.2f} p99.9={lat.get('p999', 0):.2f} "
      f"max={lat.get('max', 0):.2f} ms")
print(f"mock: requests={stats['requests']} unique={stats['uniqueEvents']} duplicates={stats['duplicates']} "
      f"maxInFlight={stats.get('maxInFlight', '?')} connections={stats.get('connections', '?')} byType={stats.get('byType')}")
verdict = "MET" if share(0.01) >= 0.99 else "NOT MET"
print(f"target p99 < 10 ms: {verdict}")
sys.exit(0 if verdict == "MET" else 1)
EOF
