#!/usr/bin/env bash
# Group commit figures (SPEC §13), each beside its anchor measured in the same run:
#   SQLite durable uniform-orders (64 clients)          vs the raw rusqlite anchor (1 and 100 per commit)
#   PostgreSQL uniform-orders                          vs ../shared/anchors/pgbench/run.sh random 32 10
#   PostgreSQL hot row (every order on one product)    vs ../shared/anchors/pgbench/run.sh hot 32 10
# Medians of RUNS runs (default 3); on PostgreSQL each run is paired with an anchor run just
# before it, and the ratio is the median of the pairs'. Usage: bench/group-commit.sh [RUNS]
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

# PostgreSQL: each shopd run right after its own anchor run, so that both see the machine as it
# is that minute (on a shared 2-core machine single runs move by a quarter from minute to
# minute); the ratio is each pair's, and the figure the median of the RUNS pairs' ratios. The
# medians of the shopd runs and of the anchor runs are printed beside it.
paired() { # KIND LABEL TARGET SCENARIO ARGS... -> two lines
  local kind=$1 label=$2 target=$3 scenario=$4; shift 4
  local shopds="" anchors="" ratios="" pairs=""
  for _ in $(seq 1 "$RUNS"); do
    local anchor shopd
    anchor=$($ANCHORS/pgbench/run.sh "$kind" 32 10 2>/dev/null | sed -n 's/^tps //p')
    shopd=$(bench/run.sh postgres "$scenario" "$@" 2>/dev/null | tee -a /tmp/group-commit-bench.log | rate)
    if [ -z "$shopd" ] || [ -z "$anchor" ]; then
      pairs="$pairs (a run or its anchor gave no figure)"
      continue
    fi
    local ratio
    ratio=$(awk -v a="$shopd" -v b="$anchor" 'BEGIN{printf "%.2f", a/b}')
    shopds="$shopds $shopd"; anchors="$anchors $anchor"; ratios="$ratios $ratio"
    pairs="$pairs $(printf '%.0f/%.0f=%s' "$shopd" "$anchor" "$ratio")"
  done
  if [ -z "$ratios" ]; then
    echo "$label no figure (see /tmp/group-commit-bench.log)"
    return
  fi
  local ms ma
  ms=$(echo $shopds | tr ' ' '\n' | median); ma=$(echo $anchors | tr ' ' '\n' | median)
  echo "$label $(printf %.0f "$ms") orders/s   raw $kind anchor $(printf %.0f "$ma") tps   ratio $(echo $ratios | tr ' ' '\n' | median) (median of the pairs; target >= $target)"
  echo "   pairs (orders/s / anchor tps):$pairs; ratio of the medians $(awk -v a="$ms" -v b="$ma" 'BEGIN{printf "%.2f", a/b}')"
}
paired random "PostgreSQL uniform-orders:" 1.0 uniform-orders --duration 10s
# 40,000 members order once each: about 3 s of orders (8,000 took 0.6 s, mostly ramp-up).
paired hot "PostgreSQL hot row:       " 10 flash-sale --members 40000 --stock 100000000
echo "(full reports: /tmp/group-commit-bench.log)"
