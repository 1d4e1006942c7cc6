#!/usr/bin/env bash
# Two baton binaries side by side on one baton-bench workload: A/B of a change. The binaries
# alternate which goes first, each measurement gets a fresh server and data directory, and the
# script prints every run's RESULT figures and server CPU, then the median (lowest-highest) of
# each figure per binary and the median of the pairs' B ÷ A ratios. One pair means little on a
# noisy 2-core machine: use several.
#
# Usage: scripts/bench-ab.sh A_BINARY B_BINARY [--pairs N] [--server-args "ARGS"] -- SUBCOMMAND [ARGS...]
#   e.g. scripts/bench-ab.sh /tmp/old/baton target/release/baton --pairs 4 -- fanout --waiters 10000
# The servers run with --appendonly no unless --server-args says otherwise. To build an older
# tree's binary without touching this one's target directory:
#   git worktree add /tmp/old REV && CARGO_TARGET_DIR=/tmp/old-target cargo build --release \
#       --bin baton --manifest-path /tmp/old/Cargo.toml   (binary: /tmp/old-target/release/baton)
# Loopback only; every step has a timeout.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }
[ $# -ge 1 ] && case "$1" in -h|--help) usage; exit 0 ;; esac
[ $# -ge 2 ] || { usage >&2; exit 2; }
A=$(realpath "$1"); B=$(realpath "$2"); shift 2
PAIRS=4
SERVER_ARGS="--appendonly no"
while [ $# -gt 0 ]; do
    case "$1" in
        --pairs) PAIRS=$2; shift 2 ;;
        --server-args) SERVER_ARGS=$2; shift 2 ;;
        --) shift; break ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
[ $# -ge 1 ] || { echo "no baton-bench workload after --" >&2; usage >&2; exit 2; }
for binary in "$A" "$B"; do [ -x "$binary" ] || { echo "not an executable: $binary" >&2; exit 2; }; done

cargo build --release -p baton-bench >&2
BENCH=${CARGO_TARGET_DIR:-target}/release/baton-bench
# shellcheck source=scripts/lib/bench-server.sh
. scripts/lib/bench-server.sh

# Runs the workload against a fresh server of binary $1; appends "LABEL NAME VALUE" lines to
# $WORK/figures, the server's CPU seconds among them.
measure() {
    local binary=$1 label=$2 before output
    shift 2
    # shellcheck disable=SC2086 # SERVER_ARGS is a list of arguments
    start_baton "$binary" --maxclients 20000 $SERVER_ARGS
    before=$(cpu_ticks "$SERVER_PID")
    output=$(timeout 600 "$BENCH" "$@" --target baton --port "$PORT")
    awk -v label="$label" -v t=$(( $(cpu_ticks "$SERVER_PID") - before )) -v hz="$(getconf CLK_TCK)" \
        'BEGIN { printf "%s server_cpu_s %.3f\n", label, t / hz }' >>"$WORK/figures"
    awk -F'\t' -v label="$label" '$1 == "RESULT" { print label, $2, $4 }' <<<"$output" >>"$WORK/figures"
    stop_baton
}

command -v redis-cli >/dev/null || { echo "needs redis-cli (apt install redis-tools)" >&2; exit 1; }
: >"$WORK/figures"
echo "A: $A"
echo "B: $B"
echo "workload: baton-bench $*; servers: $SERVER_ARGS; $PAIRS pairs"
for pair in $(seq "$PAIRS"); do
    if [ $((pair % 2)) = 1 ]; then
        measure "$A" "A$pair" "$@"; measure "$B" "B$pair" "$@"
    else
        measure "$B" "B$pair" "$@"; measure "$A" "A$pair" "$@"
    fi
done
python3 - "$WORK/figures" <<'EOF'
import collections, statistics, sys

figures = collections.defaultdict(dict)  # name -> {label: value}
for line in open(sys.argv[1]):
    label, name, value = line.split()
    figures[name][label] = float(value)

def spread(values):
    return f"{statistics.median(values):.4g} ({min(values):.4g}–{max(values):.4g})"

print()
print("| Figure | A | B | B ÷ A (pairs) |")
print("| --- | --- | --- | --- |")
for name, runs in figures.items():
    pairs = sorted({label[1:] for label in runs})
    a = [runs[f"A{p}"] for p in pairs if f"A{p}" in runs]
    b = [runs[f"B{p}"] for p in pairs if f"B{p}" in runs]
    ratios = [runs[f"B{p}"] / runs[f"A{p}"] for p in pairs if f"A{p}" in runs and f"B{p}" in runs and runs[f"A{p}"]]
    if a and b:
        print(f"| {name} | {spread(a)} | {spread(b)} | {spread(ratios) if ratios else '—'} |")
EOF
