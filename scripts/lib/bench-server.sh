# Sourced by the A/B bench scripts: a work directory removed on exit with the server running in
# it, a baton (or redis-server) started on a free loopback port, and a process's CPU time.
# Needs BENCH (the baton-bench binary) set; sets WORK, PORT and SERVER_PID.

WORK=$(mktemp -d "${TMPDIR:-/tmp}/baton-$(basename "$0" .sh).XXXXXX")
SERVER_PID=
cleanup() {
    stop_baton
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# CPU ticks (user + system) of process $1.
cpu_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }

# start_baton BINARY [ARGS...]: a fresh server (and data directory) on a free port, answering PING.
start_baton() {
    local binary=$1
    shift
    PORT=$($BENCH free-port)
    rm -rf "$WORK/data"
    "$binary" --bind 127.0.0.1 --port "$PORT" --dir "$WORK/data" "$@" 2>"$WORK/baton.log" &
    SERVER_PID=$!
    await_ping baton "$WORK/baton.log"
}

# start_redis yes|no [ARGS...]: a fresh redis-server (and data directory) on a free port, with its
# AOF on or off (fsync policy $FSYNC), answering PING.
start_redis() {
    local appendonly=$1
    shift
    PORT=$($BENCH free-port)
    rm -rf "$WORK/data" && mkdir -p "$WORK/data"
    redis-server --bind 127.0.0.1 --port "$PORT" --dir "$WORK/data" --save '' --appendonly "$appendonly" \
        --appendfsync "$FSYNC" "$@" >"$WORK/redis.log" 2>&1 &
    SERVER_PID=$!
    await_ping redis-server "$WORK/redis.log"
}

# await_ping NAME LOG: waits for the server on $PORT to answer PING, or exits showing its log.
await_ping() {
    for _ in $(seq 100); do
        if [ "$(timeout 2 redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null)" = PONG ]; then return 0; fi
        sleep 0.1
    done
    echo "$1 did not answer PING; its log:" >&2
    tail -20 "$2" >&2
    exit 1
}

stop_baton() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=
}
