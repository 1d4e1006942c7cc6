#!/usr/bin/env bash
# Placeholder until the redis-cli smoke test lands: checks the server answers PING.
set -euo pipefail
cd "$(dirname "$0")/.."
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
target/release/baton --port "$port" 2>/dev/null &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
test "$(redis-cli -p "$port" ping)" = PONG
echo "smoke: 1 passed, 0 failed"
