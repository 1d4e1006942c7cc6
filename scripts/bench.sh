#!/usr/bin/env bash
# Benchmarks baton side by side with Redis (issue 5). Installs redis-server/redis-tools if missing,
# builds the server and the load generator (bench/) in release, and for each workload starts a
# fresh baton and a fresh Redis on free loopback ports (both without persistence, or with
# --journal POLICY both with an append-only journal under that appendfsync policy: always,
# everysec (baton's default) or no), runs
# target/release/baton-bench (and redis-benchmark for W2) against both, stops them, and prints one
# Markdown table. Everything talks to 127.0.0.1 only; every step has a timeout. See
# docs/benchmarks.md for what each workload does.
#
# Usage: scripts/bench.sh [--duration S] [--connections N] [--pipeline N] [--waiters N,N]
#                         [--handoffs N] [--keys N] [--client-threads N] [--only w1,w2,...]
#                         [--baton-threads N] [--results FILE] [--journal always|everysec|no]
#                         [--runs N] [--scale-max N] [--charts DIR]
#                         [--cluster-handoffs N] [--kills N]
# With --runs N (default 1) every workload runs N times, the servers' order alternating; the table
# shows medians and the median (lowest-highest) of the runs' baton ÷ Redis ratios.
# The scale curves s1 (cycle latency vs locks held), s2 (hand-off latency vs owners in line,
# baton only) and s3 (memory per lock vs locks held) run only when --only names them; --scale-max
# skips their levels above N. --charts DIR also draws SVG charts of the results into DIR.
# The cluster workloads c1 (lock+unlock cycles, --connections clients, and the same against one
# baton node), c2 (hand-off latency, --cluster-handoffs) and c3 (failover, --kills leader kills)
# run only when --only names them: against a 3-node baton cluster (scripts/cluster.sh) and a
# 3-member etcd cluster (scripts/etcd-cluster.sh), both on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=5           # measured seconds per throughput workload (W1, W2, W5)
CONNECTIONS=50       # W1/W2 connections (redis-benchmark clients)
PIPELINE=16          # W1/W2 pipeline depth of the pipelined variant
WAITERS=1000,10000   # W4 fan-out sizes (the largest also gives the per-waiter memory)
HANDOFFS=20000       # W3 hand-offs
KEYS=1000000         # W6 held locks
CLIENT_THREADS=1     # baton-bench runtime threads
ONLY=w1,w2,w3,w4,w5,w6
RESULTS=
BATON_THREADS=       # baton --threads (default: one worker per core)
RUNS=1
SCALE_MAX=5000000    # largest level of s1-s3 (locks held, owners in line)
CHARTS=              # --charts DIR: SVG charts of the results
JOURNAL=no           # --journal POLICY: both servers journal, with --appendfsync POLICY
FSYNC=everysec
CLUSTER_HANDOFFS=2000 # C2 hand-offs
KILLS=20             # C3 leader kills

usage() { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION=$2; shift 2 ;;
        --connections) CONNECTIONS=$2; shift 2 ;;
        --pipeline) PIPELINE=$2; shift 2 ;;
        --waiters) WAITERS=$2; shift 2 ;;
        --handoffs) HANDOFFS=$2; shift 2 ;;
        --keys) KEYS=$2; shift 2 ;;
        --client-threads) CLIENT_THREADS=$2; shift 2 ;;
        --only) ONLY=$2; shift 2 ;;
        --results) RESULTS=$2; shift 2 ;;
        --baton-threads) BATON_THREADS=$2; shift 2 ;;
        --journal) JOURNAL=yes; FSYNC=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        --scale-max) SCALE_MAX=$2; shift 2 ;;
        --charts) CHARTS=$2; shift 2 ;;
        --cluster-handoffs) CLUSTER_HANDOFFS=$2; shift 2 ;;
        --kills) KILLS=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done

log() { echo "bench: $*" >&2; }

# --- dependencies -------------------------------------------------------------------------------
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-benchmark >/dev/null 2>&1 \
    || ! command -v redis-cli >/dev/null 2>&1; then
    log "installing redis-server and redis-tools"
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server redis-tools >/dev/null
fi
# The distribution's service (if any) is not used: we start our own servers on free ports.

# 10,000 waiters need 10,000+ descriptors here and in each server.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
MAX_WAITERS=$(echo "$WAITERS" | tr ',' '\n' | sort -n | tail -1)
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((MAX_WAITERS + 200)) ]; then
    log "warning: ulimit -n is $(ulimit -n); the 10,000-waiter fan-out may fail"
fi

log "building release"
cargo build --release -p baton -p baton-bench >&2
# What was built (the tree may change while the workloads run).
BUILT="$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src bench testkit Cargo.toml Cargo.lock 2>/dev/null || echo ' with uncommitted changes')"
BIN_DIR=${CARGO_TARGET_DIR:-target}/release
BATON=$BIN_DIR/baton
BENCH=$BIN_DIR/baton-bench

WORK=$(mktemp -d "${TMPDIR:-/tmp}/baton-bench.XXXXXX")
RESULTS=${RESULTS:-$WORK/results.txt}
: >"$RESULTS"
BATON_PID=
REDIS_PID=

stop_pid() {
    local pid=$1
    [ -n "$pid" ] || return 0
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

stop_servers() {
    stop_pid "$BATON_PID"; BATON_PID=
    stop_pid "$REDIS_PID"; REDIS_PID=
}

# The cluster workloads' clusters, each in a directory of its own under $WORK.
ETCD_DIR=
ETCD_NODES=1@127.0.0.1:12379,2@127.0.0.1:22379,3@127.0.0.1:32379
BATON_CLUSTER_DIR=
BATON_NODES=1@127.0.0.1:7001,2@127.0.0.1:7002,3@127.0.0.1:7003

start_clusters() {
    ETCD_DIR=$WORK/etcd
    scripts/etcd-cluster.sh start "$ETCD_DIR" >&2
    if [ -x scripts/cluster.sh ]; then
        BATON_CLUSTER_DIR=$WORK/baton-cluster
        BATON_BINARY=$BATON scripts/cluster.sh start "$BATON_CLUSTER_DIR" >&2
    else
        log "scripts/cluster.sh is missing: the cluster workloads run against etcd alone"
    fi
}

stop_clusters() {
    if [ -n "$ETCD_DIR" ]; then scripts/etcd-cluster.sh stop "$ETCD_DIR" || true; ETCD_DIR=; fi
    if [ -n "$BATON_CLUSTER_DIR" ]; then scripts/cluster.sh stop "$BATON_CLUSTER_DIR" || true; BATON_CLUSTER_DIR=; fi
}

# Runs a cluster workload against one system: cluster_one baton|baton-single|etcd SUBCOMMAND [ARGS...]
cluster_one() {
    local target=$1 sub=$2; shift 2
    local nodes extra=() limit=600
    case "$target" in
        etcd) nodes=$ETCD_NODES; extra=(--pid-dir "$ETCD_DIR" --restart "scripts/etcd-cluster.sh start $ETCD_DIR") ;;
        baton) nodes=$BATON_NODES; extra=(--pid-dir "$BATON_CLUSTER_DIR" --restart "BATON_BINARY=$BATON scripts/cluster.sh start $BATON_CLUSTER_DIR") ;;
        baton-single) nodes=1@127.0.0.1:$BATON_PORT ;;
    esac
    if [ "$sub" = cluster-failover ]; then limit=$((KILLS * 60 + 120)); else extra=(); fi
    log "$sub $* ($target)"
    timeout "$limit" "$BENCH" "$sub" --target "$target" --nodes "$nodes" --threads "$CLIENT_THREADS" "$@" \
        "${extra[@]}" | tee -a "$RESULTS" | awk '!/^QUANTILES\t/' || FAILED+=("$sub $* ($target)")
}

# Odd runs measure baton first, even runs etcd first; baton's side only if its cluster runs.
cluster_both() {
    local targets=(etcd)
    if [ -n "$BATON_CLUSTER_DIR" ]; then
        if [ $((RUN % 2)) = 1 ]; then targets=(baton etcd); else targets=(etcd baton); fi
    fi
    for target in "${targets[@]}"; do cluster_one "$target" "$@"; done
}

cleanup() {
    local status=$?
    stop_servers
    stop_clusters
    if [ "$status" -eq 0 ] && [ "$RESULTS" != "$WORK/results.txt" ]; then
        rm -rf "$WORK"
    else
        log "logs and raw results kept in $WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_ping() {
    local port=$1 name=$2
    for _ in $(seq 100); do
        if [ "$(timeout 2 redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ]; then return 0; fi
        sleep 0.1
    done
    log "$name on port $port did not answer PING; its log:"
    tail -20 "$WORK/$name.log" >&2 || true
    exit 1
}

start_servers() {
    BATON_PORT=$($BENCH free-port)
    rm -rf "$WORK/baton-data" "$WORK/appendonlydir"
    "$BATON" --bind 127.0.0.1 --port "$BATON_PORT" --maxclients 20000 ${BATON_THREADS:+--threads "$BATON_THREADS"} \
        --dir "$WORK/baton-data" --appendonly "$JOURNAL" --appendfsync "$FSYNC" 2>"$WORK/baton.log" &
    BATON_PID=$!
    REDIS_PORT=$($BENCH free-port)
    while [ "$REDIS_PORT" = "$BATON_PORT" ]; do REDIS_PORT=$($BENCH free-port); done
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly "$JOURNAL" --appendfsync "$FSYNC" \
        --maxclients 20000 \
        --daemonize no --dir "$WORK" --logfile "$WORK/redis.log" &
    REDIS_PID=$!
    wait_ping "$BATON_PORT" baton
    wait_ping "$REDIS_PORT" redis
}

# Runs baton-bench against both servers: bench_both SUBCOMMAND [ARGS...]
# A failed run is reported and the others go on; the script then exits non-zero.
FAILED=()
bench_one() {
    local target=$1 sub=$2; shift 2
    local port=$BATON_PORT extra=("${BATON_EXTRA[@]}")
    if [ "$target" = redis ]; then port=$REDIS_PORT; extra=("${REDIS_EXTRA[@]}"); fi
    log "$sub $* ($target)"
    # QUANTILES lines (latency distributions, for --charts) go to the results file only.
    timeout 600 "$BENCH" "$sub" --target "$target" --port "$port" --threads "$CLIENT_THREADS" "$@" \
        "${extra[@]}" | tee -a "$RESULTS" | awk '!/^QUANTILES\t/' || FAILED+=("$sub $* ($target)")
}
# Odd runs measure baton first, even runs Redis first.
bench_both() {
    if [ $((RUN % 2)) = 1 ]; then
        bench_one baton "$@"; bench_one redis "$@"
    else
        bench_one redis "$@"; bench_one baton "$@"
    fi
}

# bench_both with each server's PID (--pid), for the workloads that measure its memory or CPU.
bench_both_measuring_server() {
    BATON_EXTRA=(--pid "$BATON_PID"); REDIS_EXTRA=(--pid "$REDIS_PID")
    bench_both "$@"
    BATON_EXTRA=(); REDIS_EXTRA=()
}

# W2: redis-benchmark, the third-party view. redis_benchmark TARGET PORT PIPELINE COMMAND...
redis_benchmark() {
    local target=$1 port=$2 pipeline=$3; shift 3
    local common=(-h 127.0.0.1 -p "$port" -c "$CONNECTIONS" -r 1000000 -P "$pipeline" --csv)
    # A short calibration run sizes -n so that the measured run lasts about DURATION seconds.
    local rps
    rps=$(timeout 120 redis-benchmark "${common[@]}" -n 20000 "$@" | tail -1 | tr -d '"' | cut -d, -f2) || rps=
    if [ -z "$rps" ]; then FAILED+=("redis-benchmark $target -P $pipeline"); return 0; fi
    local n
    n=$(awk -v r="$rps" -v d="$DURATION" 'BEGIN { n = int(r * d); if (n < 20000) n = 20000; if (n > 20000000) n = 20000000; print n }')
    log "redis-benchmark $target -P $pipeline -n $n: $*"
    local line pid=$BATON_PID cpu_before
    if [ "$target" = redis ]; then pid=$REDIS_PID; fi
    cpu_before=$(cpu_ticks "$pid")
    line=$(timeout 600 redis-benchmark "${common[@]}" -n "$n" "$@" | tail -1 | tr -d '"') || line=
    if [ -z "$line" ]; then FAILED+=("redis-benchmark $target -P $pipeline"); return 0; fi
    local cpu_us
    cpu_us=$(awk -v t=$(( $(cpu_ticks "$pid") - cpu_before )) -v hz="$(getconf CLK_TCK)" -v n="$n" \
        'BEGIN { printf "%.3f", t / hz * 1e6 / n }')
    # test,rps,avg_latency_ms,min_latency_ms,p50_latency_ms,p95_latency_ms,p99_latency_ms,max_latency_ms
    local workload
    if [ "$pipeline" = 1 ]; then
        workload="W2 redis-benchmark, $CONNECTIONS clients, -P 1 (LOCK.TRY vs SET NX PX)"
    else
        workload="W2 redis-benchmark, $CONNECTIONS clients, -P $pipeline (LOCK.TRY vs SET NX PX)"
    fi
    echo "$line" | awk -F, -v t="$target" -v id="w2.p$pipeline" -v w="$workload" -v cpu="$cpu_us" 'BEGIN { OFS = "\t" } {
        print "RESULT", id ".rps", t, $2, "higher", w, "requests/s"
        print "RESULT", id ".cpu", t, cpu, "lower", w, "server CPU per request (µs)"
        print "RESULT", id ".p50", t, $5 * 1000, "lower", w, "p50 latency (µs)"
        print "RESULT", id ".p99", t, $7 * 1000, "lower", w, "p99 latency (µs)"
    }' | tee -a "$RESULTS"
}

wants() { case ",$ONLY," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

# The levels of a scale curve up to --scale-max: levels N,N,...
levels() { echo "$1" | tr ',' '\n' | awk -v max="$SCALE_MAX" '$1 <= max' | paste -sd, -; }

# CPU time (user + system, clock ticks) process $1 has used.
cpu_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED=$(date +%s)
BATON_EXTRA=()
REDIS_EXTRA=()

for RUN in $(seq "$RUNS"); do
if [ "$RUNS" -gt 1 ]; then log "run $RUN of $RUNS"; printf 'RUN\t%s\n' "$RUN" >>"$RESULTS"; fi
if wants w1; then
    start_servers
    bench_both_measuring_server cycle --connections "$CONNECTIONS" --pipeline 1 --duration "$DURATION"
    bench_both_measuring_server cycle --connections "$CONNECTIONS" --pipeline "$PIPELINE" --duration "$DURATION"
    stop_servers
fi
if wants w2; then
    start_servers
    for p in 1 "$PIPELINE"; do
        w2_baton() { redis_benchmark baton "$BATON_PORT" "$p" LOCK.TRY 'key:__rand_int__' o; }
        w2_redis() { redis_benchmark redis "$REDIS_PORT" "$p" SET 'key:__rand_int__' o NX PX 30000; }
        if [ $((RUN % 2)) = 1 ]; then w2_baton; w2_redis; else w2_redis; w2_baton; fi
    done
    stop_servers
fi
if wants w3; then
    start_servers
    bench_both handoff --handoffs "$HANDOFFS"
    stop_servers
fi
if wants w4; then
    start_servers
    bench_both_measuring_server fanout --waiters "$WAITERS"
    stop_servers
fi
if wants w5; then
    start_servers
    bench_both contended --duration "$DURATION"
    stop_servers
fi
if wants w6; then
    start_servers
    bench_both_measuring_server memory --keys "$KEYS"
    stop_servers
fi
if wants s1 && [ -n "$(levels 1000,100000,1000000)" ]; then
    start_servers
    bench_both scale-held --levels "$(levels 1000,100000,1000000)" --duration "$DURATION"
    stop_servers
fi
if wants s2 && [ -n "$(levels 10,10000,1000000)" ]; then
    # Baton only: the Redis recipes keep no line of waiters.
    start_servers
    bench_one baton scale-queue --levels "$(levels 10,10000,1000000)"
    stop_servers
fi
if wants s3 && [ -n "$(levels 10000,1000000,5000000)" ]; then
    start_servers
    bench_both_measuring_server scale-memory --levels "$(levels 10000,1000000,5000000)"
    stop_servers
fi
if wants c1 || wants c2 || wants c3; then
    start_clusters
    if wants c1; then cluster_both cluster-cycle --clients "$CONNECTIONS" --duration "$DURATION"; fi
    if wants c2; then cluster_both cluster-handoff --handoffs "$CLUSTER_HANDOFFS"; fi
    if wants c3; then cluster_both cluster-failover --kills "$KILLS"; fi
    stop_clusters
    if wants c1; then
        # The baseline: one baton node that fsyncs every write before it answers, as the
        # cluster's members do with their log (and etcd with its WAL).
        JOURNAL=yes FSYNC=always start_servers
        cluster_one baton-single cluster-cycle --clients "$CONNECTIONS" --duration "$DURATION"
        stop_servers
    fi
fi
done

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
ELAPSED=$(( $(date +%s) - STARTED ))

echo
echo "## Results"
echo
echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); workloads took ${ELAPSED} s"
echo "- Machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM, Linux $(uname -r)"
echo "- Load average before / after: $LOAD_BEFORE / $LOAD_AFTER"
echo "- baton $BUILT (as built at the start), $(rustc --version)"
echo "- $(redis-server --version | cut -d' ' -f1-3), $(redis-benchmark --version 2>/dev/null | head -1 || true)"
if wants c1 || wants c2 || wants c3; then echo "- $(etcd --version | head -1), 3 members on loopback (scripts/etcd-cluster.sh)"; fi
echo "- Command: scripts/bench.sh --duration $DURATION --connections $CONNECTIONS --pipeline $PIPELINE --waiters $WAITERS --handoffs $HANDOFFS --keys $KEYS --client-threads $CLIENT_THREADS --only $ONLY --runs $RUNS --scale-max $SCALE_MAX --cluster-handoffs $CLUSTER_HANDOFFS --kills $KILLS$( [ "$JOURNAL" = yes ] && echo " --journal $FSYNC")$( [ -n "$CHARTS" ] && echo " --charts $CHARTS")"
echo
"$BENCH" table "$RESULTS"
if [ -n "$CHARTS" ]; then
    log "charts:"
    "$BENCH" charts --out "$CHARTS" "$RESULTS" >&2 || FAILED+=("charts")
fi
if [ ${#FAILED[@]} -gt 0 ]; then
    log "FAILED: ${FAILED[*]}"
    exit 1
fi
