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
paired() { # KIND LABEL TARGET SCENARIO ARGS... -> one line
  local kind=$1 label=$2 target=$3 scenario=$4; shift 4
  local pairs=""
  for _ in $(seq 1 "$RUNS"); do
    local anchor shopd
    anchor=$($ANCHORS/pgbench/run.sh "$kind" 32 10 2>/dev/null | sed -n 's/^tps //p')
    shopd=$(bench/run.sh postgres "$scenario" "$@" 2>/dev/null | tee -a /tmp/group-commit-bench.log | rate)
    pairs="$pairs $shopd/$anchor"
  done
  echo "$pairs" | tr ' ' '\n' | grep . | awk -F/ -v label="$label" -v kind="$kind" -v target="$target" '
    function median(v, n,   i, j, t) { for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
                                       return v[int((n + 1) / 2)] }
    $1 == "" || $2 + 0 == 0 { runs = runs " (a run or its anchor gave no figure)"; next }
    { n++; s[n] = $1; a[n] = $2; r[n] = $1 / $2; runs = runs sprintf(" %.0f/%.0f=%.2f", $1, $2, $1 / $2) }
    END { if (n == 0) { printf "%s no figure (see /tmp/group-commit-bench.log)\n", label; exit }
          ms = median(s, n); ma = median(a, n)
          printf "%s %.0f orders/s   raw %s anchor %.0f tps   ratio %.2f (median of the pairs; target >= %s)\n   pairs (orders/s / anchor tps):%s; ratio of the medians %.2f\n",
                 label, ms, kind, ma, median(r, n), target, runs, ms / ma }'
}
paired random "PostgreSQL uniform-orders:" 1.0 uniform-orders --duration 10s
# 40,000 members order once each: about 3 s of orders (8,000 took 0.6 s, mostly ramp-up).
paired hot "PostgreSQL hot row:       " 10 flash-sale --members 40000 --stock 100000000
echo "(full reports: /tmp/group-commit-bench.log)"
