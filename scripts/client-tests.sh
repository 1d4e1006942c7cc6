#!/usr/bin/env bash
# The client compatibility tests: real Redis tools and client libraries against target/release/baton
# (build it first: `cargo build --release --bins`; scripts/install-test-deps.sh installs the tools):
# - pytest tests/clients: redis-cli (one-shot, --pipe, stdin scripts, --scan, --bigkeys,
#   --memkeys, --stat, interactive in tmux), redis-benchmark, redis-py and valkey-py sync/asyncio in
#   RESP2/RESP3, the commands redis-commander sends when it loads, the examples/ recipes (shell,
#   Python, Rust, Node, Go) run as concurrent nodes, and deploy/ (the systemd unit, the Grafana
#   dashboard's metrics against a live server), redis-py RedisCluster against a 3-node cluster
#   through leader kills;
# - node --test tests/clients/node: ioredis and node-redis, and their subscribers and monitors;
#   ioredis Cluster through leader kills;
# - cargo test --test clients: redis-rs sync and async, and cluster-async through leader kills.
# Every suite starts its own servers on free loopback ports and stops them; each is bounded by a
# timeout. Ends with `clients: N passed, M failed` and exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

passed=0
failed=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

count() { # suite passed failed
    echo "suite $1: passed=$2 failed=$3"
    passed=$((passed + $2))
    failed=$((failed + $3))
}

if [ ! -x target/release/baton ]; then
    echo "target/release/baton is missing: run cargo build --release --bins" >&2
    echo "clients: 0 passed, 1 failed"
    exit 1
fi
if ! cargo build --release --quiet --example once; then
    count "rust recipe build" 0 1
fi

# --- redis-cli, redis-benchmark, redis-py, the recipes -------------------------------------------
timeout --kill-after=10 600 python3 -m pytest tests/clients -q -ra --junitxml="$work/pytest.xml"
if [ -s "$work/pytest.xml" ]; then
    read -r total bad skipped < <(python3 - "$work/pytest.xml" <<'EOF'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
total = sum(int(s.get("tests", 0)) for s in suites)
bad = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
skipped = sum(int(s.get("skipped", 0)) for s in suites)
print(total, bad, skipped)
EOF
)
    # A skip is not a pass: every client test is expected to run here.
    count pytest $((total - bad - skipped)) $((bad + skipped))
else
    count pytest 0 1
fi

# --- ioredis, node-redis --------------------------------------------------------------------------
(cd tests/clients/node && timeout --kill-after=10 180 node --test --test-reporter=tap ioredis.test.mjs node-redis.test.mjs pubsub.test.mjs cluster.test.mjs) >"$work/node.tap" 2>&1
node_status=$?
cat "$work/node.tap"
node_pass=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$work/node.tap" | tail -1)
node_fail=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$work/node.tap" | tail -1)
if [ -z "$node_pass" ] || { [ "$node_status" -ne 0 ] && [ "${node_fail:-0}" -eq 0 ]; }; then
    count node "${node_pass:-0}" 1
else
    count node "$node_pass" "${node_fail:-0}"
fi

# --- redis-rs -----------------------------------------------------------------------------------
timeout --kill-after=10 300 cargo test --release --test clients 2>&1 | tee "$work/cargo.txt"
cargo_status=${PIPESTATUS[0]}
result=$(grep -E '^test result: ' "$work/cargo.txt" | tail -1)
rs_pass=$(sed -n 's/.* \([0-9]*\) passed;.*/\1/p' <<<"$result")
rs_fail=$(sed -n 's/.* \([0-9]*\) failed;.*/\1/p' <<<"$result")
if [ -z "$rs_pass" ] || { [ "$cargo_status" -ne 0 ] && [ "${rs_fail:-0}" -eq 0 ]; }; then
    count redis-rs "${rs_pass:-0}" 1
else
    count redis-rs "$rs_pass" "${rs_fail:-0}"
fi

echo "clients: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
