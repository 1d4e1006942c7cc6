#!/usr/bin/env bash
# Where an unpipelined request's server time goes, baton against Redis: W2 -P 1 (redis-benchmark,
# 50 clients, LOCK.TRY against SET NX PX 30000), both journaling everysec. For each run, a fresh
# server of each in turn (which goes first alternates) and per request: the server's user and
# kernel CPU (from /proc), its context switches and its system calls by kind (perf stat's
# syscall tracepoints), and requests/s. Then medians (lowest-highest) per server.
#
# Usage: scripts/bench-request-cost.sh [--runs N] [--requests N] [--baton-args "ARGS"]
#   e.g. --baton-args "--threads 1" to compare one event loop with Redis's one thread.
# Needs perf (linux-perf) with access to tracepoints (root, or perf_event_paranoid <= -1).
# Builds nothing: run `cargo build --release --workspace` first. Loopback only; bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; }
RUNS=3
REQUESTS=300000
BATON_ARGS=
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS=$2; shift 2 ;;
        --requests) REQUESTS=$2; shift 2 ;;
        --baton-args) BATON_ARGS=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
# shellcheck source=scripts/lib/release-binaries.sh
. scripts/lib/release-binaries.sh
for tool in redis-server redis-benchmark redis-cli perf; do
    command -v "$tool" >/dev/null || { echo "$tool is missing" >&2; exit 1; }
done

# shellcheck source=scripts/lib/bench-server.sh
. scripts/lib/bench-server.sh
# shellcheck source=scripts/lib/median.sh
. scripts/lib/median.sh
FSYNC=everysec
STAT_PID=
trap '[ -n "$STAT_PID" ] && kill "$STAT_PID" 2>/dev/null; cleanup' EXIT

EVENTS=task-clock,context-switches
SYSCALLS=(recvfrom sendto read write pwrite64 epoll_wait sched_yield futex)
for call in "${SYSCALLS[@]}"; do EVENTS+=",syscalls:sys_enter_$call"; done

# User and system CPU ticks process $1 has used.
user_and_system_ticks() { awk '{ sub(/.*\) /, ""); print $12, $13 }' "/proc/$1/stat"; }

columns="rps user_us sys_us switches ${SYSCALLS[*]}"
printf '%-4s %-6s' run server; for column in $columns; do printf ' %9s' "$column"; done; echo
for run in $(seq "$RUNS"); do
    if [ $((run % 2)) = 1 ]; then order=(baton redis); else order=(redis baton); fi
    for system in "${order[@]}"; do
        if [ "$system" = baton ]; then
            # shellcheck disable=SC2086 # BATON_ARGS is a list of flags
            start_baton "$BATON" --appendonly yes --appendfsync everysec $BATON_ARGS
            command=(LOCK.TRY 'key:__rand_int__' o)
        else
            start_redis yes
            command=(SET 'key:__rand_int__' o NX PX 30000)
        fi
        perf stat -x, -e "$EVENTS" -p "$SERVER_PID" -o "$WORK/stat" &
        STAT_PID=$!
        sleep 0.3
        read -r user_before sys_before < <(user_and_system_ticks "$SERVER_PID")
        rps=$(timeout 300 redis-benchmark -h 127.0.0.1 -p "$PORT" -c 50 -P 1 -r 1000000 -n "$REQUESTS" --csv \
            "${command[@]}" | tail -1 | tr -d '"' | cut -d, -f2)
        read -r user_after sys_after < <(user_and_system_ticks "$SERVER_PID")
        kill -INT "$STAT_PID"; wait "$STAT_PID" 2>/dev/null || true; STAT_PID=
        stop_baton
        awk -F, -v run="$run" -v server="$system" -v rps="$rps" -v n="$REQUESTS" -v hz="$(getconf CLK_TCK)" \
            -v user=$((user_after - user_before)) -v sys=$((sys_after - sys_before)) -v calls="${SYSCALLS[*]}" '
            $1 ~ /^[0-9.]+$/ { count[$3] = $1 }
            END {
                printf "%-4s %-6s %9.0f %9.2f %9.2f %9.3f", run, server, rps, user / hz * 1e6 / n, sys / hz * 1e6 / n,
                    count["context-switches"] / n
                split(calls, call, " ")
                for (i = 1; i in call; i++) printf " %9.3f", count["syscalls:sys_enter_" call[i]] / n
                print ""
            }' "$WORK/stat" | tee -a "$WORK/table"
    done
done
echo
echo "Medians (lowest-highest) of $RUNS runs, per request except rps; CPU in µs."
awk -v columns="$columns" "$MEDIAN_AWK"'
    { rows[$2]++; for (c = 3; c <= NF; c++) value[$2, c, rows[$2]] = $c }
    END {
        split(columns, name, " ")
        for (server in rows) {
            printf "%-6s", server
            for (c = 3; c - 2 in name; c++) {
                n = rows[server]
                for (r = 1; r <= n; r++) v[r] = value[server, c, r]
                m = median(v, n)
                printf "  %s %s (%s-%s)", name[c - 2], m, v[1], v[n]
            }
            print ""
        }
    }' "$WORK/table"
