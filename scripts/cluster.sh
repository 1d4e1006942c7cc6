#!/usr/bin/env bash
# A three-node baton cluster on loopback, for trying the cluster out and for the benchmarks.
#
#   scripts/cluster.sh start [dir]    build if needed, start nodes 1-3 on ports 7001-7003
#   scripts/cluster.sh status [dir]   each node's pid and role, and who leads
#   scripts/cluster.sh stop [dir]     SIGTERM every node and wait for it to exit
#
# Each node keeps its Raft log under <dir>/n<id> (default dir: ./baton-cluster), logs to
# <dir>/n<id>.log and writes its pid to <dir>/n<id>.pid. The cluster bus of node N listens on
# 17000+N (client port + 10000, Redis Cluster's convention). BATON_PORT_BASE moves the ports
# (default 7000: clients on base+1..base+3). Extra flags for every node: BATON_FLAGS.
set -euo pipefail
cd "$(dirname "$0")/.."

command=${1:-status}
dir=${2:-baton-cluster}
base=${BATON_PORT_BASE:-7000}
binary=${BATON_BINARY:-target/release/baton}
peers="1@127.0.0.1:$((base + 1)),2@127.0.0.1:$((base + 2)),3@127.0.0.1:$((base + 3))"

# A SIGKILLed node can stay a zombie for a while (its parent, this script, is gone and whoever
# inherits it reaps late): kill -0 still finds it, but it is not running.
running() {
    local state
    [[ -f "$dir/n$1.pid" ]] || return 1
    state=$(sed 's/.*) //' "/proc/$(cat "$dir/n$1.pid")/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [[ -n "$state" && "$state" != Z ]]
}

case "$command" in
start)
    [[ -x "$binary" ]] || cargo build --release --bin baton
    mkdir -p "$dir"
    for id in 1 2 3; do
        if running "$id"; then
            echo "node $id already runs (pid $(cat "$dir/n$id.pid"))"
            continue
        fi
        # shellcheck disable=SC2086 # BATON_FLAGS is a list of flags
        "$binary" --port $((base + id)) --dir "$dir/n$id" --cluster-node-id "$id" --cluster-peers "$peers" \
            ${BATON_FLAGS:-} >>"$dir/n$id.log" 2>&1 &
        echo $! >"$dir/n$id.pid"
    done
    # A fresh cluster forms within a few seconds; wait until one node serves key commands.
    for _ in $(seq 1 100); do
        for id in 1 2 3; do
            if [[ "$(redis-cli -p $((base + id)) LOCK.INFO cluster-probe 2>/dev/null | head -1)" == state ]]; then
                echo "cluster up: leader is node $id on port $((base + id)) (peers $peers)"
                exit 0
            fi
        done
        sleep 0.1
    done
    echo "no leader after 10 s; see $dir/n*.log" >&2
    exit 1
    ;;
status)
    for id in 1 2 3; do
        if running "$id"; then
            reply=$(redis-cli -p $((base + id)) LOCK.INFO cluster-probe 2>&1 | head -1)
            case "$reply" in
            state) role="leader" ;;
            MOVED*) role="follower (${reply##* } leads)" ;;
            *) role="no leader known ($reply)" ;;
            esac
            echo "node $id: pid $(cat "$dir/n$id.pid"), port $((base + id)), $role"
        else
            echo "node $id: not running"
        fi
    done
    ;;
stop)
    for id in 1 2 3; do
        if running "$id"; then
            kill -TERM "$(cat "$dir/n$id.pid")"
        fi
    done
    for id in 1 2 3; do
        while running "$id"; do sleep 0.1; done
        rm -f "$dir/n$id.pid"
    done
    echo "stopped"
    ;;
*)
    echo "usage: $0 start|status|stop [dir]" >&2
    exit 2
    ;;
esac
