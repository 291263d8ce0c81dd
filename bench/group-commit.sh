#!/usr/bin/env bash
# Group commit figures (SPEC §13), each beside its anchor measured in the same run:
#   SQLite durable uniform-orders (64 clients)          vs the raw rusqlite anchor (1 and 100 per commit)
#   PostgreSQL uniform-orders                          vs ../shared/anchors/pgbench/run.sh random 32 10
#   PostgreSQL hot row (every order on one product)    vs ../shared/anchors/pgbench/run.sh hot 32 10
# Medians of RUNS runs (default 3). Usage: bench/group-commit.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
ANCHORS=../shared/anchors
cargo build --release -q -p shopd -p shopd-bench

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
rate() { sed -n 's/^requests .* = \([0-9.]*\) req\/s.*/\1/p' | head -1; }
run_n() { # backend scenario args... -> median req/s
  local backend=$1 scenario=$2; shift 2
  for _ in $(seq 1 "$RUNS"); do
    bench/run.sh "$backend" "$scenario" "$@" 2>/dev/null | tee -a /tmp/group-commit-bench.log | rate
  done | median
}
: >/tmp/group-commit-bench.log

echo "== anchors and shopd, $(nproc) cores, $(date -u +%FT%TZ)"
sqlite_raw_1=$(CARGO_TARGET_DIR=/tmp/anchor-target cargo run -q --release --manifest-path $ANCHORS/sqlite/Cargo.toml -- 1 5000 2>&1 | sed -n 's/.*orders\/s=\([0-9]*\).*/\1/p')
sqlite_raw_100=$(CARGO_TARGET_DIR=/tmp/anchor-target cargo run -q --release --manifest-path $ANCHORS/sqlite/Cargo.toml -- 100 50000 2>&1 | sed -n 's/.*orders\/s=\([0-9]*\).*/\1/p')
sqlite=$(run_n sqlite uniform-orders --duration 10s)
echo "SQLite uniform-orders:   ${sqlite} orders/s   (raw rusqlite: ${sqlite_raw_1} at 1/commit, ${sqlite_raw_100} at 100/commit; target 10,000)"

pg_random=$($ANCHORS/pgbench/run.sh random 32 10 2>/dev/null | sed -n 's/^tps //p')
pg=$(run_n postgres uniform-orders --duration 10s)
echo "PostgreSQL uniform-orders: ${pg} orders/s   raw random anchor ${pg_random} tps   ratio $(awk -v a="$pg" -v b="$pg_random" 'BEGIN{printf "%.2f", a/b}') (target >= 1.0)"

pg_hot=$($ANCHORS/pgbench/run.sh hot 32 10 2>/dev/null | sed -n 's/^tps //p')
# 40,000 members order once each: about 3 s of orders (8,000 took 0.6 s, mostly ramp-up).
hot=$(run_n postgres flash-sale --members 40000 --stock 100000000)
echo "PostgreSQL hot row:        ${hot} orders/s   raw hot anchor ${pg_hot} tps   ratio $(awk -v a="$hot" -v b="$pg_hot" 'BEGIN{printf "%.2f", a/b}') (target >= 10)"
echo "(full reports: /tmp/group-commit-bench.log)"
