#!/usr/bin/env bash
# W4 against its floor: how soon the last of N waiters can hear an outcome on this machine at
# all. Runs `baton-bench fanout` (W4) against baton, Redis and `baton-bench fanout-floor` (a server
# that tells each subscriber with one send(2) and does nothing else), each run a fresh server of
# each in turn, the order rotating, and prints per run and as medians (lowest-highest): the time
# until the last waiter is answered, the server's CPU per waiter and the load generator's. The
# floor's time is what no server can beat with this load generator on this machine: W4's aim of
# half Redis's time is reachable only if the floor's ratio is well below 0.5.
#
# Usage: scripts/bench-floor.sh [--runs N] [--waiters N] [--rounds N] [--journal yes|no]
# Builds nothing: run `cargo build --release --workspace` first. Loopback only; bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; }
RUNS=3
WAITERS=10000
ROUNDS=5
JOURNAL=yes
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS=$2; shift 2 ;;
        --waiters) WAITERS=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --journal) JOURNAL=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
# shellcheck source=scripts/lib/release-binaries.sh
. scripts/lib/release-binaries.sh
command -v redis-server >/dev/null || { echo "redis-server is missing (scripts/install-test-deps.sh)" >&2; exit 1; }
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# shellcheck source=scripts/lib/bench-server.sh
. scripts/lib/bench-server.sh
# shellcheck source=scripts/lib/median.sh
. scripts/lib/median.sh
FSYNC=everysec

# start_floor: the floor server on a free port, answering PING.
start_floor() {
    PORT=$($BENCH free-port)
    "$BENCH" fanout-floor --port "$PORT" 2>"$WORK/floor.log" &
    SERVER_PID=$!
    await_ping floor "$WORK/floor.log"
}

systems=(floor redis baton)
printf '%-5s %-6s %10s %14s %14s\n' run server "last (ms)" "server µs/w" "client µs/w"
for run in $(seq "$RUNS"); do
    for index in 0 1 2; do
        system=${systems[$(( (index + run) % 3 ))]}
        case "$system" in
            baton) start_baton "$BATON" --maxclients 20000 --appendonly "$JOURNAL" ;;
            redis) start_redis "$JOURNAL" --maxclients 20000 ;;
            floor) start_floor ;;
        esac
        # The floor speaks Redis's pub/sub: the Redis recipe measures it.
        target=$system; [ "$system" = floor ] && target=redis
        timeout 600 "$BENCH" fanout --target "$target" --port "$PORT" --waiters "$WAITERS" --rounds "$ROUNDS" \
            --pid "$SERVER_PID" 2>/dev/null >"$WORK/out"
        stop_baton
        value() { awk -F'\t' -v id="w4.n$WAITERS.$1" '$1 == "RESULT" && $2 == id { print $4 }' "$WORK/out"; }
        printf '%-5s %-6s %10.1f %14.2f %14.2f\n' "$run" "$system" "$(value last)" "$(value cpu)" "$(value client_cpu)" \
            | tee -a "$WORK/table"
    done
done
echo
echo "Medians (lowest-highest) of $RUNS runs; ratios are each run's value ÷ that run's Redis value."
awk "$MEDIAN_AWK"'
    { last[$2, $1] = $3; cpu[$2, $1] = $4; client[$2, $1] = $5; runs[$1] = 1 }
    function summary(table, who, ratio,   n, run, values, low, high, m) {
        n = 0
        for (run in runs) { values[++n] = ratio ? table[who, run] / table["redis", run] : table[who, run] }
        m = median(values, n); low = values[1]; high = values[n]
        return sprintf(ratio ? "%.2fx (%.2f-%.2f)" : "%.1f (%.1f-%.1f)", m, low, high)
    }
    END {
        printf "%-6s %-22s %-22s %-22s %-22s\n", "server", "last (ms)", "last / Redis", "server µs/waiter", "client µs/waiter"
        split("floor redis baton", order, " ")
        for (i = 1; i <= 3; i++) {
            s = order[i]
            printf "%-6s %-22s %-22s %-22s %-22s\n", s, summary(last, s, 0), summary(last, s, 1), summary(cpu, s, 0), summary(client, s, 0)
        }
    }' "$WORK/table"
