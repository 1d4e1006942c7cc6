#!/usr/bin/env bash
# A three-node baton cluster on loopback, for trying the cluster out and for the benchmarks.
#
#   scripts/cluster.sh start [dir]    build if needed, start nodes 1-3 on ports 7001-7003
#   scripts/cluster.sh status [dir]   each node's pid and role, and who leads
#   scripts/cluster.sh stop [dir]     SIGTERM every node and wait for it to exit
#   scripts/cluster.sh add [dir]      start node 4 (then 5, ...) and add it with CLUSTER ADDNODE
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

# Nodes 1-3, and those added since (each keeps the cluster id it joined in <dir>/n<id>.join).
nodes() {
    local id
    printf '%s\n' 1 2 3
    for join in "$dir"/n*.join; do
        [[ -f "$join" ]] || continue
        id=${join##*/n}
        echo "${id%.join}"
    done | sort -n
}

# The port of the node that serves key commands (it answers LOCK.INFO), or nothing.
leader_port() {
    local id
    for id in $(nodes); do
        if [[ "$(redis-cli -p $((base + id)) LOCK.INFO cluster-probe 2>/dev/null | head -1)" == state ]]; then
            echo $((base + id))
            return
        fi
    done
}

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
    for id in $(nodes); do
        if running "$id"; then
            echo "node $id already runs (pid $(cat "$dir/n$id.pid"))"
            continue
        fi
        join=()
        node_peers=$peers
        if [[ -f "$dir/n$id.join" ]]; then
            join=(--cluster-join "$(cat "$dir/n$id.join")")
            node_peers="$peers,$id@127.0.0.1:$((base + id))"
        fi
        # shellcheck disable=SC2086 # BATON_FLAGS is a list of flags
        "$binary" --port $((base + id)) --dir "$dir/n$id" --cluster-node-id "$id" --cluster-peers "$node_peers" \
            "${join[@]}" ${BATON_FLAGS:-} >>"$dir/n$id.log" 2>&1 &
        echo $! >"$dir/n$id.pid"
    done
    # A fresh cluster forms within a few seconds; wait until one node serves key commands.
    for _ in $(seq 1 100); do
        port=$(leader_port)
        if [[ -n "$port" ]]; then
            echo "cluster up: leader is node $((port - base)) on port $port (peers $peers)"
            exit 0
        fi
        sleep 0.1
    done
    echo "no leader after 10 s; see $dir/n*.log" >&2
    exit 1
    ;;
status)
    for id in $(nodes); do
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
    for id in $(nodes); do
        if running "$id"; then
            kill -TERM "$(cat "$dir/n$id.pid")"
        fi
    done
    for id in $(nodes); do
        while running "$id"; do sleep 0.1; done
        rm -f "$dir/n$id.pid"
    done
    echo "stopped"
    ;;
add)
    port=$(leader_port)
    [[ -n "$port" ]] || { echo "no leader: start the cluster first" >&2; exit 1; }
    id=$(($(nodes | tail -1) + 1))
    redis-cli -p "$port" CLUSTER INFO | tr -d '\r' | sed -n 's/^cluster_id://p' >"$dir/n$id.join"
    # shellcheck disable=SC2086 # BATON_FLAGS is a list of flags
    "$binary" --port $((base + id)) --dir "$dir/n$id" --cluster-node-id "$id" \
        --cluster-peers "$peers,$id@127.0.0.1:$((base + id))" --cluster-join "$(cat "$dir/n$id.join")" \
        ${BATON_FLAGS:-} >>"$dir/n$id.log" 2>&1 &
    echo $! >"$dir/n$id.pid"
    # The node needs a moment to listen on its bus; the leader waits for it to catch up.
    sleep 0.5
    reply=$(redis-cli -p "$port" CLUSTER ADDNODE "$id" 127.0.0.1 $((base + id)) 2>&1)
    if [[ "$reply" != OK ]]; then
        echo "node $id was not added: $reply (see $dir/n$id.log)" >&2
        exit 1
    fi
    echo "node $id added on port $((base + id)); the leader is on port $port"
    ;;
*)
    echo "usage: $0 start|status|stop|add [dir]" >&2
    exit 2
    ;;
esac
