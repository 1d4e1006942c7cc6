#!/usr/bin/env bash
# Do an operation once across all nodes, with baton and redis-cli (bash 5, redis-cli 6 or later).
#
# Every node runs this with the same key and its own node id. One of them runs the command while
# the others wait in baton's queue; when it succeeds they are all told DONE (with its result) and
# skip the work; when it fails the next node in line gets the lock and tries.
#
#     examples/once.sh --port 6390 --key build:42 --node "$(hostname)" -- make image
#
# It prints what it did, one line per step, the last line being the outcome:
# `<node>: SUCCESS result=...` (exit 0), `<node>: DONE finisher=... result=...` (exit 0, work
# skipped), `<node>: FAILURE reason=...` (exit 1), `<node>: LOST ...` (exit 3: the lock was lost
# while working). Connection and usage errors go to stderr with exit 2.
#
# Why a coprocess: baton releases a lock as FAILURE when the connection that took it closes, so
# one-shot `redis-cli LOCK.WAIT ...` calls would lose the lock as soon as each returned. Here ONE
# redis-cli runs for the whole operation as a coprocess: we write commands to its stdin, one per
# line, and read its replies in CSV (one line per reply, strings quoted and escaped).
# (The other way is to run the server with `--release-on-disconnect no` and rely on leases only.)
# Each LOCK.WAIT blocks for --wait-ms at most and is sent again when it times out: the owner keeps
# its place in line. redis-cli has no read timeout; each read here waits --wait-ms plus 5 s.
set -uo pipefail

host=127.0.0.1 port=6390 key='' node='' lease_ms=30000 wait_ms=2000 keep_ms=600000
password=${BATON_PASSWORD-}

usage() {
    echo "$1" >&2
    echo "usage: once.sh [--host H] [--port P] [--password PW] --key KEY --node NODE [--lease-ms MS] [--wait-ms MS] [--keep-ms MS] -- COMMAND [ARGS...]" >&2
    exit 2
}

while (($#)); do
    case $1 in
        --host | --port | --password | --key | --node | --lease-ms | --wait-ms | --keep-ms)
            (($# >= 2)) || usage "$1 needs a value"
            name=${1#--}
            printf -v "${name//-/_}" '%s' "$2"
            shift 2
            ;;
        --) shift; break ;;
        *) usage "unknown option $1" ;;
    esac
done
[[ -n $key && -n $node ]] || usage "--key and --node are required"
(($#)) || usage "the work is missing: add -- and a command"
for n in "$port" "$lease_ms" "$wait_ms" "$keep_ms"; do [[ $n =~ ^[0-9]+$ ]] || usage "not a number: $n"; done
command=("$@")

say() { printf '%s: %s\n' "$node" "$*"; }
fail() {
    printf '%s: ERROR %s\n' "$node" "$*" >&2
    exit 2
}

# --- The one connection -------------------------------------------------------------------------
# REDISCLI_AUTH keeps the password out of the process list (and redis-cli's warning about -a).
if [[ -n $password ]]; then export REDISCLI_AUTH=$password; fi
coproc CLI { exec redis-cli -h "$host" -p "$port" --csv 2>&1; }
# shellcheck disable=SC2153 # CLI_PID is set by coproc
cli_in=${CLI[1]} cli_out=${CLI[0]} cli_pid=$CLI_PID

# Sends one command: each argument double-quoted with redis-cli's escapes, so spaces, quotes and
# newlines in a RESULT or REASON survive.
send() {
    local line="" arg
    for arg in "$@"; do
        arg=${arg//\\/\\\\}
        arg=${arg//\"/\\\"}
        arg=${arg//$'\n'/\\n}
        arg=${arg//$'\r'/\\r}
        line+="\"$arg\" "
    done
    printf '%s\n' "$line" >&"$cli_in" || fail "redis-cli is gone"
}

# Reads one reply line (waiting at most $1 seconds; 0 = no limit) and splits it into FIELDS, with
# KINDS telling a quoted string (s) from a bare word such as a number, NULL or ERROR (w).
FIELDS=() KINDS=()
receive() {
    local line timeout=(-t "$1")
    [[ $1 == 0 ]] && timeout=()
    IFS= read -r "${timeout[@]}" line <&"$cli_out" || fail "no reply from redis-cli"
    FIELDS=() KINDS=()
    local LC_ALL=C i=0 n=${#line} c field
    while ((i < n)); do
        if [[ ${line:i:1} == '"' ]]; then
            field="" i=$((i + 1))
            while ((i < n)); do
                c=${line:i:1}
                if [[ $c == "\\" ]]; then
                    i=$((i + 1)) c=${line:i:1}
                    case $c in
                        n) c=$'\n' ;; r) c=$'\r' ;; t) c=$'\t' ;; a) c=$'\a' ;; b) c=$'\b' ;;
                        x) printf -v c '%b' "\\x${line:i+1:2}" && i=$((i + 2)) ;;
                    esac
                elif [[ $c == '"' ]]; then
                    break
                fi
                field+=$c i=$((i + 1))
            done
            i=$((i + 1)) KINDS+=(s)
        else
            field=${line:i} field=${field%%,*} i=$((i + ${#field})) KINDS+=(w)
        fi
        FIELDS+=("$field")
        [[ ${line:i:1} == , ]] && i=$((i + 1))
    done
    if [[ ${FIELDS[0]-} == ERROR && ${KINDS[0]} == w ]]; then REPLY_ERROR=${FIELDS[1]-}; else REPLY_ERROR=; fi
    REPLY_LINE=$line
}

# Closes our end: redis-cli sees end of input and exits, which closes the connection.
hang_up() {
    exec {cli_in}>&- 2>/dev/null
    wait "$cli_pid" 2>/dev/null
}

send PING
receive 10
[[ ${FIELDS[0]-} == PONG ]] || fail "cannot talk to baton at $host:$port: ${REPLY_LINE-}"

# --- Wait for the lock or for the outcome -------------------------------------------------------
read_timeout=0
((wait_ms > 0)) && read_timeout=$((wait_ms / 1000 + 5))
say "WAITING key=$key"
while :; do
    send LOCK.WAIT "$key" "$node" "$wait_ms" PX "$lease_ms"
    receive "$read_timeout"
    [[ -z $REPLY_ERROR ]] || fail "LOCK.WAIT: $REPLY_ERROR"
    case ${FIELDS[0]-}/${KINDS[0]-} in
        ACQUIRED/s)
            token=${FIELDS[1]}
            break
            ;;
        DONE/s)
            result=${FIELDS[2]-}
            [[ ${KINDS[2]-} == w ]] && result= # nil: the finisher gave no RESULT
            say "DONE finisher=${FIELDS[1]} result=$result"
            hang_up
            exit 0
            ;;
        NULL/w) say "STILL WAITING" ;; # timed out; our place in line is kept, ask again
        *) fail "unexpected LOCK.WAIT reply: $REPLY_LINE" ;;
    esac
done
say "ACQUIRED token=$token"

# --- Do the work, renewing the lease ------------------------------------------------------------
now_ms() { local t=${EPOCHREALTIME//[.,]/}; NOW=$((t / 1000)); }
output=$(mktemp)
trap 'rm -f "$output"' EXIT
(
    # The work must not keep our connection open if we die (bash does not hand coprocess
    # descriptors to subshells anyway; this makes it explicit).
    eval "exec $cli_in>&- $cli_out<&-"
    export BATON_KEY=$key BATON_NODE=$node BATON_TOKEN=$token
    exec "${command[@]}"
) >"$output" &
work=$!
every=$((lease_ms / 3)) lost=
((every > 0)) || every=1
now_ms
next=$((NOW + every))
while kill -0 "$work" 2>/dev/null; do
    now_ms
    if ((NOW >= next)); then
        send LOCK.EXTEND "$key" "$node" "$token" "$lease_ms"
        receive 10
        if [[ -n $REPLY_ERROR ]]; then
            lost="LOCK.EXTEND refused, work stopped: $REPLY_ERROR"
            kill -KILL "$work" 2>/dev/null
            break
        fi
        say "EXTENDED token=$token lease_ms=$lease_ms"
        now_ms
        next=$((NOW + every))
    fi
    sleep 0.05
done
wait "$work"
code=$?
if [[ -n $lost ]]; then
    say "LOST $lost"
    hang_up
    exit 3
fi

# --- Report the outcome -------------------------------------------------------------------------
if ((code == 0)); then
    result=$(<"$output")
    send LOCK.UNLOCK "$key" "$node" "$token" SUCCESS RESULT "$result" KEEP "$keep_ms"
    line="SUCCESS result=$result" status=0
else
    if ((code > 128)); then reason="terminated (signal $((code - 128)))"; else reason="exit status $code"; fi
    ((code == 127)) && reason="cannot start ${command[0]} (exit status 127)"
    send LOCK.UNLOCK "$key" "$node" "$token" FAILURE REASON "$reason"
    line="FAILURE reason=$reason" status=1
fi
receive 10
if [[ -n $REPLY_ERROR ]]; then
    # NOTHOLDER / NOLOCK: the lease ran out or the connection was lost; someone else may redo it.
    say "LOST LOCK.UNLOCK refused: $REPLY_ERROR"
    status=3
else
    say "$line"
fi
hang_up
exit "$status"
