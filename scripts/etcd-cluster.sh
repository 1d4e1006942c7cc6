#!/usr/bin/env bash
# A 3-member etcd cluster on loopback, the rival of baton's cluster in the cluster workloads
# (scripts/bench.sh --only c1,c2,c3; docs/benchmarks.md). Installs etcd-server and etcd-client
# (etcdctl) from Debian if missing; the distribution's own etcd service is not used.
#
# Usage: scripts/etcd-cluster.sh start|stop|status [DIR]
#   start   starts every member that is not running (all three on a new DIR, or the one a
#           benchmark killed) and waits until all three answer and agree on a leader;
#   stop    stops the members (SIGTERM, SIGKILL after 10 s) and removes DIR's data;
#   status  prints each member's endpoint status; fails unless all three are up.
# DIR (default ${TMPDIR:-/tmp}/baton-etcd) holds member N's data in nN.etcd, its log in nN.log
# and its pid in nN.pid (the pid files the failover workload reads, named as scripts/cluster.sh
# names baton's).
#
# Member N (named nN) listens for clients on 127.0.0.1:N2379 and for its peers on 127.0.0.1:N2380:
#   n1: clients 12379, peers 12380;  n2: 22379 / 22380;  n3: 32379 / 32380
# (etcd's own local-cluster layout). etcd's defaults otherwise: heartbeat 100 ms, election
# timeout 1000 ms, and an fsync of its write-ahead log before every commit (it has no switch
# to turn that off).
set -euo pipefail
cd "$(dirname "$0")/.."

ACTION=${1:-}
DIR=${2:-${TMPDIR:-/tmp}/baton-etcd}
MEMBERS=(1 2 3)
client_port() { echo "${1}2379"; }
peer_port() { echo "${1}2380"; }
ENDPOINTS=$(for n in "${MEMBERS[@]}"; do printf '127.0.0.1:%s,' "$(client_port "$n")"; done)
ENDPOINTS=${ENDPOINTS%,}
CLUSTER=$(for n in "${MEMBERS[@]}"; do printf 'n%s=http://127.0.0.1:%s,' "$n" "$(peer_port "$n")"; done)
CLUSTER=${CLUSTER%,}
# Marks a directory this script made, the only kind `stop` deletes.
MARK=.baton-etcd-cluster

log() { echo "etcd-cluster: $*" >&2; }

install_etcd() {
    command -v etcd >/dev/null 2>&1 && command -v etcdctl >/dev/null 2>&1 && return 0
    log "installing etcd-server and etcd-client"
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq etcd-server etcd-client >/dev/null
}

# A killed member can stay a zombie for a while (its parent, this script, is gone and whoever
# inherits it reaps late): that is not running.
running() {
    local pidfile=$DIR/n$1.pid state
    [ -f "$pidfile" ] || return 1
    state=$(sed 's/.*) //' "/proc/$(cat "$pidfile")/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

etcdctl_() { ETCDCTL_API=3 timeout 10 etcdctl --dial-timeout 2s --command-timeout 3s "$@"; }

# Every member up, and all of them naming the same leader.
healthy() {
    local leaders
    etcdctl_ --endpoints "$ENDPOINTS" endpoint health >/dev/null 2>&1 || return 1
    leaders=$(etcdctl_ --endpoints "$ENDPOINTS" endpoint status -w json 2>/dev/null \
        | grep -o '"leader":[0-9]*' | sort -u | wc -l) || return 1
    [ "$leaders" = 1 ]
}

start_member() {
    local n=$1
    # The initial-cluster flags only matter the first time: a member with data rejoins from it.
    etcd --name "n$n" --data-dir "$DIR/n$n.etcd" \
        --listen-client-urls "http://127.0.0.1:$(client_port "$n")" \
        --advertise-client-urls "http://127.0.0.1:$(client_port "$n")" \
        --listen-peer-urls "http://127.0.0.1:$(peer_port "$n")" \
        --initial-advertise-peer-urls "http://127.0.0.1:$(peer_port "$n")" \
        --initial-cluster "$CLUSTER" --initial-cluster-state new --initial-cluster-token baton-bench \
        >>"$DIR/n$n.log" 2>&1 </dev/null &
    echo $! >"$DIR/n$n.pid"
}

start() {
    install_etcd
    mkdir -p "$DIR"
    touch "$DIR/$MARK"
    for n in "${MEMBERS[@]}"; do
        running "$n" || start_member "$n"
    done
    for _ in $(seq 300); do
        if healthy; then
            log "healthy: $ENDPOINTS (data in $DIR)"
            return 0
        fi
        for n in "${MEMBERS[@]}"; do
            running "$n" || { log "member n$n exited; its log:"; tail -20 "$DIR/n$n.log" >&2; exit 1; }
        done
        sleep 0.1
    done
    log "not healthy after 30 s"
    status || true
    exit 1
}

stop() {
    local n pid
    for n in "${MEMBERS[@]}"; do
        [ -f "$DIR/n$n.pid" ] || continue
        pid=$(cat "$DIR/n$n.pid")
        kill "$pid" 2>/dev/null || continue
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    done
    if [ -f "$DIR/$MARK" ]; then rm -rf "$DIR"; fi
}

status() {
    local n down=0
    for n in "${MEMBERS[@]}"; do
        if running "$n"; then echo "n$n: pid $(cat "$DIR/n$n.pid")"; else echo "n$n: down"; down=1; fi
    done
    etcdctl_ --endpoints "$ENDPOINTS" endpoint status -w table || down=1
    [ "$down" = 0 ]
}

case "$ACTION" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
