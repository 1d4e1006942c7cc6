# Sourced by the A/B bench scripts: a work directory removed on exit with the server running in
# it, a baton started on a free loopback port, and a process's CPU time.
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
    for _ in $(seq 100); do
        if [ "$(timeout 2 redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null)" = PONG ]; then return 0; fi
        sleep 0.1
    done
    echo "baton did not answer PING; its log:" >&2
    tail -20 "$WORK/baton.log" >&2
    exit 1
}

stop_baton() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=
}
