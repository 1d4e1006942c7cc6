#!/usr/bin/env bash
# The journal's own cost (issue 11: everysec keeps >= 0.9x the throughput of --appendonly no).
# The same baton binary runs with `--appendonly yes --appendfsync POLICY` and with
# `--appendonly no`, alternating which goes first, a fresh server (and data directory) for every
# measurement. `--server redis` measures Redis's own AOF the same way, for comparison (W1 as
# SET NX PX + DEL cycles, W2 as SET NX PX). Each pair gives the ratio journal / no journal of throughput and of server CPU per
# operation (for W1, per TRY+UNLOCK cycle); the script prints every pair and the median (lowest-highest) of the ratios. A single
# pair means little on a noisy 2-core machine: use several.
#
# Workloads: w1p1 / w1p16 (baton-bench cycle: TRY+UNLOCK, 50 connections, unpipelined or
# pipeline 16) and w2p1 / w2p16 (redis-benchmark LOCK.TRY on random keys, 50 clients).
# Loopback only; every step has a timeout.
#
# Usage: scripts/bench-journal-cost.sh [--pairs N] [--duration S] [--fsync always|everysec|no]
#                                      [--only w1p1,w1p16,w2p1,w2p16] [--threads N]
#                                      [--server baton|redis]
set -euo pipefail
cd "$(dirname "$0")/.."

PAIRS=5
DURATION=4
FSYNC=everysec
ONLY=w1p1,w1p16,w2p1,w2p16
THREADS=
SERVER=baton

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --pairs) PAIRS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --fsync) FSYNC=$2; shift 2 ;;
        --only) ONLY=$2; shift 2 ;;
        --threads) THREADS=$2; shift 2 ;;
        --server) SERVER=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done

command -v redis-benchmark >/dev/null || { echo "needs redis-benchmark (apt install redis-tools)" >&2; exit 1; }
cargo build --release -p baton -p baton-bench >&2
BIN_DIR=${CARGO_TARGET_DIR:-target}/release
BATON=$BIN_DIR/baton
BENCH=$BIN_DIR/baton-bench
# shellcheck source=scripts/lib/bench-server.sh
. scripts/lib/bench-server.sh

start() {
    if [ "$SERVER" = redis ]; then
        start_redis "$1"
    else
        start_baton "$BATON" --appendonly "$1" --appendfsync "$FSYNC" ${THREADS:+--threads "$THREADS"}
    fi
}

# Prints "OPS_PER_SECOND CPU_MICROSECONDS_PER_OP" for one workload against the running server.
measure() {
    local workload=$1
    case "$workload" in
        w1p*)
            timeout 120 "$BENCH" cycle --target "$SERVER" --port "$PORT" --pipeline "${workload#w1p}" \
                --duration "$DURATION" --pid "$SERVER_PID" |
                awk -F'\t' '$1 == "RESULT" && $2 ~ /\.rate$/ { rate = $4 } $1 == "RESULT" && $2 ~ /\.cpu$/ { cpu = $4 }
                    END { if (rate == "" || cpu == "") exit 1; print rate, cpu }'
            ;;
        w2p*)
            local pipeline=${workload#w2p}
            local command=(LOCK.TRY 'key:__rand_int__' o)
            [ "$SERVER" = redis ] && command=(SET 'key:__rand_int__' o NX PX 30000)
            local common=(-h 127.0.0.1 -p "$PORT" -c 50 -r 1000000 -P "$pipeline" --csv "${command[@]}")
            # A short run sizes -n so that the measured run lasts about DURATION seconds.
            local rps n before line
            rps=$(timeout 120 redis-benchmark -n 20000 "${common[@]}" | tail -1 | tr -d '"' | cut -d, -f2)
            n=$(awk -v r="$rps" -v d="$DURATION" 'BEGIN { n = int(r * d); if (n < 20000) n = 20000; print n }')
            before=$(cpu_ticks "$SERVER_PID")
            line=$(timeout 600 redis-benchmark -n "$n" "${common[@]}" | tail -1 | tr -d '"')
            awk -v line="$line" -v t=$(( $(cpu_ticks "$SERVER_PID") - before )) -v hz="$(getconf CLK_TCK)" -v n="$n" \
                'BEGIN { split(line, f, ","); printf "%s %.3f\n", f[2], t / hz * 1e6 / n }'
            ;;
        *) echo "unknown workload $workload" >&2; exit 2 ;;
    esac
}

echo "$SERVER --appendonly yes --appendfsync $FSYNC against --appendonly no${THREADS:+, --threads $THREADS}: $PAIRS pairs of ${DURATION} s"
echo
echo "| Workload | pair | ops/s journal | ops/s none | ratio | CPU µs/op journal | CPU µs/op none | ratio |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
SUMMARY=()
for workload in ${ONLY//,/ }; do
    ratios=()
    for pair in $(seq "$PAIRS"); do
        # Odd pairs measure the journal first, even pairs the memory-only server first.
        if [ $((pair % 2)) = 1 ]; then order=(yes no); else order=(no yes); fi
        declare -A got=()
        for appendonly in "${order[@]}"; do
            start "$appendonly"
            got[$appendonly]=$(measure "$workload")
            stop_baton
        done
        read -r ops_yes cpu_yes <<<"${got[yes]}"
        read -r ops_no cpu_no <<<"${got[no]}"
        line=$(awk -v w="$workload" -v p="$pair" -v oy="$ops_yes" -v on="$ops_no" -v cy="$cpu_yes" -v cn="$cpu_no" \
            'BEGIN { printf "| %s | %d | %.0f | %.0f | %.2f | %.2f | %.2f | %.2f |", w, p, oy, on, oy / on, cy, cn, cy / cn }')
        echo "$line"
        ratios+=("$(awk -v oy="$ops_yes" -v on="$ops_no" -v cy="$cpu_yes" -v cn="$cpu_no" 'BEGIN { print oy / on, cy / cn }')")
        unset got
    done
    SUMMARY+=("$(printf '%s\n' "${ratios[@]}" | python3 -c '
import statistics, sys
rows = [tuple(map(float, line.split())) for line in sys.stdin if line.strip()]
ops, cpu = [r[0] for r in rows], [r[1] for r in rows]
status = "met" if statistics.median(ops) >= 0.9 else "MISSED"
status = status if sys.argv[2] == "baton" else "(Redis: no target)"
print(f"| {sys.argv[1]} | {statistics.median(ops):.2f} ({min(ops):.2f}–{max(ops):.2f}) | "
      f"{statistics.median(cpu):.2f} ({min(cpu):.2f}–{max(cpu):.2f}) | {status} |")
' "$workload" "$SERVER")")
done
echo
echo "Median (lowest–highest) of the pairs' ratios, journal ÷ no journal:"
echo
echo "| Workload | throughput (target ≥ 0.9) | server CPU per operation | status |"
echo "| --- | --- | --- | --- |"
printf '%s\n' "${SUMMARY[@]}"
