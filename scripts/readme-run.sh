#!/usr/bin/env bash
# Checks that the README's run command works as written: takes the first indented `cargo run`
# line from README.md itself (so the check cannot drift from the doc), runs it from the repository
# root in a fresh process group, waits until `redis-cli -p PORT PING` answers PONG (generous: the
# command may have to build first), then stops it as Ctrl-C would and checks that it exited 0.
# PORT is the command's --port (6390 if it has none); if something already listens there the check
# fails at once instead of talking to it.
set -euo pipefail
cd "$(dirname "$0")/.."

START_BOUND=${BATON_README_RUN_TIMEOUT:-300}   # seconds until PONG, build included
STOP_BOUND=15                                  # seconds from SIGINT to exit

fail() { echo "readme-run: FAIL: $*" >&2; exit 1; }

run_cmd=$(sed -n 's/^    \(cargo run .*\)$/\1/p' README.md | head -1)
[ -n "$run_cmd" ] || fail "README.md has no indented 'cargo run ...' line"
port=$(sed -n 's/.*--port[ =]\([0-9][0-9]*\).*/\1/p' <<<"$run_cmd")
port=${port:-6390}
command -v redis-cli >/dev/null 2>&1 || fail "redis-cli is missing; run scripts/install-test-deps.sh"

port_taken() {
    python3 - "$port" <<'PY'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(0)
sys.exit(1)
PY
}
if port_taken; then
    fail "port $port is already in use, so '$run_cmd' cannot be checked; stop whatever listens there (ss -ltnp 'sport = :$port')"
fi

log=$(mktemp "${TMPDIR:-/tmp}/baton-readme-run.XXXXXX")
pid=
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -KILL -- "-$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -f "$log"
}
trap cleanup EXIT

echo "readme-run: $run_cmd"
# setsid: its own process group, so the stop below reaches cargo and the server as Ctrl-C in a
# terminal would, and nothing of this script's.
setsid bash -c "$run_cmd" </dev/null >"$log" 2>&1 &
pid=$!

deadline=$((SECONDS + START_BOUND))
until [ "$(timeout 2 redis-cli -p "$port" PING 2>/dev/null)" = PONG ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
        tail -n 20 "$log" >&2
        fail "'$run_cmd' exited before answering PING (output above)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        tail -n 20 "$log" >&2
        fail "no PONG on port $port within ${START_BOUND}s (output above)"
    fi
    sleep 0.5
done
echo "readme-run: PONG on port $port"

kill -INT -- "-$pid"
deadline=$((SECONDS + STOP_BOUND))
while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
if kill -0 "$pid" 2>/dev/null; then
    tail -n 20 "$log" >&2
    fail "still running ${STOP_BOUND}s after SIGINT"
fi
status=0
wait "$pid" || status=$?
pid=
if [ "$status" -ne 0 ]; then
    tail -n 20 "$log" >&2
    fail "exited with status $status after SIGINT (output above)"
fi
echo "readme-run: stopped cleanly (exit 0)"
