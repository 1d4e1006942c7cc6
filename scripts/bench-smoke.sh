#!/usr/bin/env bash
# A short smoke of the benchmarks, run by the test suite (scripts/test.sh): every single-node
# workload and scale curve of scripts/bench.sh against baton and Redis, both journaling, with tiny
# counts and the SVG charts, then scripts/bench-floor.sh once. It checks that each runs and prints
# its table (a row for every workload, the targets, five charts), never a figure: benchmarks are
# not tests, and the figures of so short a run mean nothing. About a minute once built. The
# cluster workloads need etcd and stay with `scripts/bench.sh --only c1,c2,c3`.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=$(mktemp -d /tmp/baton-bench-smoke.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
failed=0
fail() {
    echo "bench-smoke: $1" >&2
    failed=1
}

if ! scripts/bench.sh --runs 1 --duration 1 --waiters 200 --handoffs 500 --keys 20000 --scale-max 10000 \
    --only w1,w2,w3,w4,w5,w6,s1,s2,s3 --journal everysec --charts "$OUT/charts" >"$OUT/table" 2>"$OUT/log"; then
    tail -n 30 "$OUT/log" >&2
    fail "scripts/bench.sh failed"
fi
for workload in "W1 uncontended cycle, 50 conns, unpipelined" "W1 uncontended cycle, 50 conns, pipeline 16" \
    "W2 redis-benchmark, 50 clients, -P 1" "W2 redis-benchmark, 50 clients, -P 16" "W3 hand-off: PING" \
    "W3 hand-off, 8 waiters" "W4 fan-out, 200 waiters" "W5 contended" "W6 memory, 20,000 held locks" \
    "W6 memory, 200 waiters" "S1 TRY+UNLOCK" "S2 hand-off, 10 owners" "S2 hand-off, 10,000 owners" \
    "S3 memory at 10,000 held locks"; do
    grep -qF "| $workload" "$OUT/table" || fail "no row for \"$workload\""
done
grep -q '^| Target | Figures | Status |' "$OUT/table" || fail "no table of targets"
charts=$(find "$OUT/charts" -name '*.svg' 2>/dev/null | wc -l)
[ "$charts" -eq 5 ] || fail "$charts charts drawn, not 5"

if ! scripts/bench-floor.sh --runs 1 --waiters 100 --rounds 1 >"$OUT/floor" 2>&1; then
    tail -n 30 "$OUT/floor" >&2
    fail "scripts/bench-floor.sh failed"
fi
for server in floor redis baton; do
    grep -qE "^$server +[0-9]" "$OUT/floor" || fail "bench-floor.sh printed no medians for $server"
done

if [ "$failed" -ne 0 ]; then
    exit 1
fi
echo "bench-smoke: every workload ran and printed its table; charts drawn; bench-floor.sh ran"
