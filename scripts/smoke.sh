#!/usr/bin/env bash
# redis-cli smoke test: starts target/release/baton on a free loopback port and drives it with real
# redis-cli invocations (one-shot commands, RESP3 with -3, stdin scripts and --pipe on a single
# connection, blocked LOCK.WAITs in the background). Assumes the binary is built (scripts/test.sh
# builds it first). Prints one line per check and ends with `smoke: N passed, M failed`; exits
# non-zero if any check failed.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=target/release/baton
if [ ! -x "$BIN" ]; then
    echo "smoke: $BIN is missing; run 'cargo build --release' (scripts/test.sh does)" >&2
    exit 1
fi
if ! command -v redis-cli >/dev/null 2>&1; then
    echo "smoke: redis-cli is missing; run scripts/install-test-deps.sh" >&2
    exit 1
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
tmp=$(mktemp -d)
passed=0
failed=0
finished=no
server=
HOLDER_PID=
QUEUED_PID=

cleanup() {
    local status=$?
    # The holder's redis-cli ends when its stdin closes; kill it in case it does not.
    if [ -n "${HOLDER_PID:-}" ]; then
        exec {HOLDER_IN}>&- 2>/dev/null || true
        kill "$HOLDER_PID" 2>/dev/null || true
    fi
    if [ -n "${QUEUED_PID:-}" ]; then
        exec {QUEUED_IN}>&- {QUEUED_OUT}<&- 2>/dev/null || true
        kill "$QUEUED_PID" 2>/dev/null || true
    fi
    if [ -n "$server" ]; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    if [ "$finished" != yes ]; then
        echo "smoke: aborted (exit status $status); server log:" >&2
        tail -n 20 "$tmp/server.log" >&2 2>/dev/null || true
        echo "smoke: $passed passed, $((failed + 1)) failed"
        status=1
    fi
    rm -rf "$tmp"
    exit "$status"
}
trap cleanup EXIT

# check NAME EXPECTED ACTUAL
check() {
    if [ "$2" == "$3" ]; then
        passed=$((passed + 1))
        echo "ok   $1"
    else
        failed=$((failed + 1))
        echo "FAIL $1"
        echo "     expected: $(printf '%q' "$2")"
        echo "     got:      $(printf '%q' "$3")"
    fi
}

# check_true NAME DETAIL COMMAND...: passes when COMMAND succeeds.
check_true() {
    local name=$1 detail=$2
    shift 2
    if "$@"; then
        passed=$((passed + 1))
        echo "ok   $name"
    else
        failed=$((failed + 1))
        echo "FAIL $name: $detail"
    fi
}

# Integer comparisons that are false (not an error) when a side is not a number.
int_between() { [ "$1" -ge "$2" ] 2>/dev/null && [ "$1" -le "$3" ] 2>/dev/null; }
int_greater() { [ "$1" -gt "$2" ] 2>/dev/null; }
is_token() { [[ "$1" =~ ^[1-9][0-9]*$ ]]; }

# One-shot redis-cli (its own connection, closed when the command returns), raw output.
cli() {
    timeout 5 redis-cli -p "$port" "$@" 2>&1 || true
}

# The value of FIELD in `redis-cli -3 --no-raw LOCK.INFO KEY` (a RESP3 map, one field per line).
info_field() {
    timeout 5 redis-cli -3 --no-raw -p "$port" LOCK.INFO "$1" 2>&1 \
        | sed -n "s/^ *[0-9]*# \"$2\" => //p" || true
}

# Polls until LOCK.INFO KEY reports N blocked waiters (at most 5 s).
wait_blocked() {
    local i
    for i in $(seq 100); do
        [ "$(info_field "$1" blocked)" = "(integer) $2" ] && return 0
        sleep 0.05
    done
    return 1
}

# --- start the server ---------------------------------------------------------------------------
# A short default lease so that anything a check leaves behind (queue places, holds) runs out fast.
"$BIN" --port "$port" --lease-ms 3000 --dir "$tmp/data" >"$tmp/server.log" 2>&1 &
server=$!
for _ in $(seq 100); do
    [ "$(timeout 1 redis-cli -p "$port" PING 2>/dev/null || true)" = PONG ] && break
    kill -0 "$server" 2>/dev/null || break
    sleep 0.05
done

# --- connection basics --------------------------------------------------------------------------
check "PING" "PONG" "$(cli PING)"
check "ECHO" "hello baton" "$(cli ECHO "hello baton")"
check "HELLO 3 (RESP3) reports baton_version" '"0.1.0"' \
    "$(timeout 5 redis-cli -3 --no-raw -p "$port" HELLO 3 | sed -n 's/^ *[0-9]*# "baton_version" => //p')"
check "TIME: the server's Unix seconds, within a minute of this machine's" "yes" \
    "$(cli TIME | head -1 | awk -v now="$(date +%s)" '{ d = $1 - now; print (d < 60 && d > -60) ? "yes" : "no: " $1 }')"
check "ROLE on a single node: master" "master" "$(cli ROLE | head -1)"

# --- the holder: one redis-cli kept open as a coprocess ------------------------------------------
# With the default --release-on-disconnect yes, a lock is released when the connection that took it
# closes, so a one-shot `redis-cli LOCK.TRY` would lose its lock at once. The holder keeps one
# connection open for the whole test; commands go to its stdin, raw replies come back line by line.
coproc HOLDER { exec timeout 30 redis-cli -p "$port"; }
HOLDER_IN=${HOLDER[1]}
HOLDER_OUT=${HOLDER[0]}

# holder LINE: one command line as typed at a redis-cli prompt (quote arguments with spaces).
holder() {
    printf '%s\n' "$1" >&"$HOLDER_IN" 2>/dev/null || echo "smoke: the holder's redis-cli is gone" >&2
}

# holder_read VAR: the next line the holder's redis-cli printed.
holder_read() {
    local line
    IFS= read -r -t 5 line <&"$HOLDER_OUT" 2>/dev/null || line="<no reply within 5 s>"
    printf -v "$1" '%s' "$line"
}

# --- a queued owner: a second redis-cli kept open, through two FIFOs ----------------------------
# A queue place, like a lock, leaves with the connection that last renewed it, so the owner queued
# without blocking also keeps one connection open (bash has one coprocess; FIFOs give a second).
mkfifo "$tmp/queued.in" "$tmp/queued.out"
timeout 30 redis-cli -p "$port" <"$tmp/queued.in" >"$tmp/queued.out" 2>&1 &
QUEUED_PID=$!
exec {QUEUED_IN}>"$tmp/queued.in" {QUEUED_OUT}<"$tmp/queued.out"

queued() {
    printf '%s\n' "$1" >&"$QUEUED_IN" 2>/dev/null || echo "smoke: the queued owner's redis-cli is gone" >&2
}

# queued_read N: the next N lines the queued owner's redis-cli printed, one per line.
queued_read() {
    local line i
    for ((i = 0; i < $1; i++)); do
        IFS= read -r -t 5 line <&"$QUEUED_OUT" 2>/dev/null || line="<no reply within 5 s>"
        printf '%s\n' "$line"
    done
}

# --- LOCK.TRY: grant, idempotent retry, NOQUEUE, queueing, LOCK.INFO ----------------------------
holder "LOCK.TRY smoke:grant a PX 10000"
holder_read kind
holder_read token
check "LOCK.TRY on a free key: ACQUIRED" "ACQUIRED" "$kind"
check_true "LOCK.TRY gives a numeric token" "token '$token'" is_token "$token"
holder "LOCK.TRY smoke:grant a PX 10000"
holder_read kind
holder_read again
check "LOCK.TRY by the holder again: same token" "ACQUIRED $token" "$kind $again"
check "LOCK.TRY NOQUEUE on a held key: BUSY holder" $'BUSY\na' "$(cli LOCK.TRY smoke:grant other NOQUEUE)"
queued "LOCK.TRY smoke:grant other"
check "LOCK.TRY on a held key: QUEUED position" $'QUEUED\n1' "$(queued_read 2)"
check "LOCK.INFO (RESP3) state" '"held"' "$(info_field smoke:grant state)"
check "LOCK.INFO holder" '"a"' "$(info_field smoke:grant holder)"
check "LOCK.INFO token" "(integer) $token" "$(info_field smoke:grant token)"
check "LOCK.INFO waiters" "(integer) 1" "$(info_field smoke:grant waiters)"
lease=$(info_field smoke:grant lease_ms)
lease=${lease#(integer) }
check_true "LOCK.INFO lease_ms counts down from PX" "lease_ms '$lease'" int_between "$lease" 1 10000
check "LOCK.CANCEL takes the queued owner out" "1" "$(cli LOCK.CANCEL smoke:grant other)"
check "LOCK.CANCEL of an owner not queued" "0" "$(cli LOCK.CANCEL smoke:grant other)"
holder "LOCK.UNLOCK smoke:grant a $token FAILURE"
holder_read released
check "LOCK.UNLOCK FAILURE with nobody waiting frees the key" "0" "$released"

# --- hand-off: FAILURE passes the lock straight to the blocked head of the queue -----------------
holder "LOCK.TRY smoke:handoff a PX 10000"
holder_read kind
holder_read t1
# The waiter is a stdin script on one connection: after its WAIT is answered it fences the old
# token and reads LOCK.INFO while it is the holder.
printf '%s\n' "LOCK.WAIT smoke:handoff b 5000" "LOCK.EXTEND smoke:handoff a $t1 1000" \
    "LOCK.INFO smoke:handoff" | timeout 8 redis-cli -p "$port" >"$tmp/handoff.out" 2>&1 &
waiter=$!
check_true "LOCK.WAIT blocks behind the holder" "LOCK.INFO never showed 1 blocked waiter" \
    wait_blocked smoke:handoff 1
holder "LOCK.UNLOCK smoke:handoff a $t1 FAILURE REASON 'disk full'"
holder_read handed
check "LOCK.UNLOCK FAILURE hands off to the waiter (1)" "1" "$handed"
wait "$waiter" || true
mapfile -t out <"$tmp/handoff.out"
check "the blocked waiter prints ACQUIRED" "ACQUIRED" "${out[0]:-}"
t2=${out[1]:-0}
check_true "the waiter's token is larger than the holder's" "holder $t1, waiter '$t2'" int_greater "$t2" "$t1"
check "the old holder's token is fenced: NOTHOLDER" \
    "NOTHOLDER the lock is held under another owner or token (a stale token after the lease ran out, or another owner's lock)" \
    "${out[2]:-}"
check "LOCK.INFO on the new holder's connection shows the failure reason" "disk full" \
    "$(printf '%s\n' "${out[@]:4}" | sed -n '/^last_failure$/{n;p;}')"

# --- fan-out: SUCCESS answers every blocked waiter DONE with the RESULT --------------------------
holder "LOCK.TRY smoke:fanout a PX 10000"
holder_read kind
holder_read tf
# A queued owner that is not blocked: it is owed DONE on its next call.
queued "LOCK.TRY smoke:fanout q"
check "an owner queued with LOCK.TRY" $'QUEUED\n1' "$(queued_read 2)"
waiters=()
for n in 1 2 3; do
    timeout 8 redis-cli -p "$port" LOCK.WAIT smoke:fanout "w$n" 5000 >"$tmp/fanout.$n" 2>&1 &
    waiters+=($!)
done
check_true "three LOCK.WAITs block" "LOCK.INFO never showed 3 blocked waiters" wait_blocked smoke:fanout 3
holder "LOCK.UNLOCK smoke:fanout a $tf SUCCESS RESULT sha256:feed"
holder_read told
check "LOCK.UNLOCK SUCCESS reports the owners told (3 blocked + 1 queued)" "4" "$told"
for n in 1 2 3; do
    wait "${waiters[$((n - 1))]}" || true
    check "waiter w$n prints DONE finisher result" $'DONE\na\nsha256:feed' "$(cat "$tmp/fanout.$n")"
done
queued "LOCK.TRY smoke:fanout q"
check "the queued owner learns DONE on its next LOCK.TRY" $'DONE\na\nsha256:feed' "$(queued_read 3)"

# --- KEEP: late arrivals are told DONE for a while ---------------------------------------------
holder "LOCK.TRY smoke:keep a PX 10000"
holder_read kind
holder_read tk
holder "LOCK.UNLOCK smoke:keep a $tk SUCCESS RESULT r1 KEEP 2000"
holder_read told
check "LOCK.UNLOCK SUCCESS KEEP with nobody waiting" "0" "$told"
check "a late LOCK.TRY within KEEP: DONE" $'DONE\na\nr1' "$(cli LOCK.TRY smoke:keep late)"
check "LOCK.INFO state while kept" '"done"' "$(info_field smoke:keep state)"

# --- lease expiry is a FAILURE: the waiter gets the lock ----------------------------------------
holder "LOCK.TRY smoke:lease a PX 300"
holder_read kind
holder_read tl
printf '%s\n' "LOCK.WAIT smoke:lease b 3000" "LOCK.EXTEND smoke:lease a $tl 1000" "LOCK.INFO smoke:lease" \
    | timeout 8 redis-cli -p "$port" >"$tmp/lease.out" 2>&1 || true
mapfile -t out <"$tmp/lease.out"
check "a WAIT behind an expiring lease: ACQUIRED" "ACQUIRED" "${out[0]:-}"
check "the expired holder's LOCK.EXTEND: NOTHOLDER" \
    "NOTHOLDER the lock is held under another owner or token (a stale token after the lease ran out, or another owner's lock)" \
    "${out[2]:-}"
check "LOCK.INFO last_failure after the lease ran out" "lease expired" \
    "$(printf '%s\n' "${out[@]:4}" | sed -n '/^last_failure$/{n;p;}')"

# --- release on disconnect ---------------------------------------------------------------------
# A holder that keeps its connection open for 1 s only, under a 10 s lease.
{ echo "LOCK.TRY smoke:disc x PX 10000"; sleep 1; } | timeout 5 redis-cli -p "$port" >/dev/null 2>&1 &
short=$!
for _ in $(seq 100); do
    [ "$(info_field smoke:disc state)" = '"held"' ] && break
    sleep 0.02
done
start=$(date +%s%N)
check "the holder's connection closing hands the lock on" "ACQUIRED" \
    "$(cli LOCK.WAIT smoke:disc y 4000 | head -n 1)"
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
check_true "... well before its 10 s lease" "took ${elapsed_ms} ms" int_between "$elapsed_ms" 0 3000
wait "$short" || true

# --- pipelining: requests behind a blocked LOCK.WAIT run after it -------------------------------
holder "LOCK.TRY smoke:pipe a PX 10000"
holder_read kind
holder_read tp
printf 'LOCK.WAIT smoke:pipe b 300\r\nPING\r\nLOCK.INFO smoke:pipe\r\n' \
    | timeout 5 redis-cli -p "$port" --pipe >"$tmp/pipe.out" 2>&1 || true
check "--pipe: a timed-out WAIT then two more commands on one connection" "errors: 0, replies: 3" \
    "$(tail -n 1 "$tmp/pipe.out")"
# redis-cli has exited; the server drops the place once it has seen the close.
for _ in $(seq 100); do
    [ "$(info_field smoke:pipe queue)" = "(empty array)" ] && break
    sleep 0.05
done
check "a timed-out WAIT's place leaves with its connection" "(empty array)" "$(info_field smoke:pipe queue)"
holder "LOCK.UNLOCK smoke:pipe a $tp SUCCESS"
holder_read told
check "... and nobody is owed DONE" "0" "$told"

# --- errors ----------------------------------------------------------------------------------------
check "wrong arity" "ERR wrong number of arguments for 'lock.try' command" "$(cli LOCK.TRY k | head -n 1)"
check "unknown command" "ERR unknown command 'LOCK.NOPE', with args beginning with: 'a' 'b c' " \
    "$(cli LOCK.NOPE a "b c" | head -n 1)"
check "LOCK.UNLOCK of a free key: NOLOCK" \
    "NOLOCK the lock is not held (never acquired, released, or its lease ran out)" \
    "$(cli LOCK.UNLOCK smoke:free a 1 SUCCESS | head -n 1)"
check "LOCK.WAIT with a negative timeout" "ERR timeout is negative" "$(cli LOCK.WAIT k o -1 | head -n 1)"

# --- INFO ------------------------------------------------------------------------------------------
check "INFO locks starts with '# Locks'" "# Locks" "$(cli INFO locks | tr -d '\r' | head -n 1)"
check_true "INFO (everything) has a '# Locks' section" "no '# Locks' line" \
    grep -qx '# Locks' <(cli INFO | tr -d '\r')
handoffs=$(cli INFO locks | tr -d '\r' | sed -n 's/^lock_handoffs://p')
check_true "INFO lock_handoffs counts the hand-offs (>= 3)" "lock_handoffs '$handoffs'" \
    int_between "$handoffs" 3 1000000

# --- SHUTDOWN (last: it stops the server) ----------------------------------------------------------
check "SHUTDOWN ABORT with no shutdown under way" "ERR No shutdown in progress." \
    "$(cli SHUTDOWN ABORT | head -n 1)"
check "SHUTDOWN gets no reply: the connection closing is the answer" "" "$(cli SHUTDOWN NOSAVE)"
for _ in $(seq 200); do
    kill -0 "$server" 2>/dev/null || break
    sleep 0.05
done
if kill -0 "$server" 2>/dev/null; then
    check "SHUTDOWN stops the server within 10 s" "stopped" "still running"
else
    server_status=0
    wait "$server" || server_status=$?
    server=
    check "SHUTDOWN stops the server with exit status 0" "0" "$server_status"
fi

finished=yes
echo "smoke: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
