#!/usr/bin/env python3
"""Restart with N held locks (issue 11): how long until the server serves again, baton vs Redis.

For each server: start it with its append-only journal on (baton: the default, --appendfsync
everysec; Redis: --appendonly yes --appendfsync everysec), take N locks with pipelined requests on
one connection (baton: LOCK.TRY key owner PX 3600000; Redis: SET key owner NX PX 3600000), SIGKILL
it, start it again on the same directory and time from the start until a PING is answered without
-LOADING and the last key is held with its token (baton) or value (Redis). Prints one line per
server and the ratio. Loopback only; bounded by N and a 10-minute cap per load.

    scripts/bench-restart.py [--locks 1000000] [--baton target/release/baton] [--runs 3]
"""

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "attacks"))
from common import Client, free_port, resp  # noqa: E402

HOST = "127.0.0.1"


def take(key, baton):
    return resp("LOCK.TRY", key, "owner", "PX", 3_600_000) if baton else resp("SET", key, "owner", "NX", "PX", 3_600_000)


def read_back(key, baton):
    """What proves a lock is back: the holder's re-TRY (the same token) or the key's value."""
    return resp("LOCK.TRY", key, "owner", "PX", 3_600_000) if baton else resp("GET", key)


def fill(port, locks, baton):
    conn = Client(port, timeout=600)
    conn.pipeline((take(b"lock:%d" % i, baton) for i in range(locks)), batch=10_000)
    conn.sock.sendall(read_back(b"lock:%d" % (locks - 1), baton))
    return conn, conn.reply()


def start(argv, log):
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def pong(port):
    """Whether the server answers PING (not -LOADING, not refused)."""
    try:
        conn = Client(port, timeout=5)
        answered = conn.call("PING") == b"+PONG"
        conn.sock.close()
        return answered
    except (ConnectionError, OSError):
        return False


def wait_ping(port, proc, failure):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        if pong(port):
            return
        time.sleep(0.02)
    raise SystemExit(failure)


def serving(port, key, baton, expected, deadline):
    while time.monotonic() < deadline:
        if pong(port):
            conn = Client(port, timeout=60)
            conn.sock.sendall(read_back(key, baton))
            got = conn.reply()
            conn.sock.close()
            return got == expected
        time.sleep(0.005)
    return False


def run_one(name, argv_for, locks, baton):
    work = tempfile.mkdtemp(prefix=f"bench-restart-{name}-")
    try:
        port = free_port()
        log = open(os.path.join(work, "server.log"), "ab")
        argv = argv_for(port, work)
        proc = start(argv, log)
        wait_ping(port, proc, f"{name} did not start")
        conn, expected = fill(port, locks, baton)
        time.sleep(1.5)  # everysec: let the last second reach the page cache's fsync too
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        conn.sock.close()
        began = time.monotonic()
        proc = start(argv, log)
        ok = serving(port, b"lock:%d" % (locks - 1), baton, expected, began + 600)
        took = time.monotonic() - began
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if not ok:
            raise SystemExit(f"{name}: the last lock was not back after the restart; see {work}/server.log")
        return took
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--locks", type=int, default=1_000_000)
    parser.add_argument("--baton", default="target/release/baton")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    def baton_argv(port, work):
        return [args.baton, "--bind", HOST, "--port", str(port), "--dir", os.path.join(work, "data"),
                "--release-on-disconnect", "no"]

    def redis_argv(port, work):
        return ["redis-server", "--bind", HOST, "--port", str(port), "--save", "", "--appendonly", "yes",
                "--appendfsync", "everysec", "--dir", work, "--daemonize", "no"]

    ratios, times = [], {"baton": [], "redis": []}
    for run in range(args.runs):
        b = run_one("baton", baton_argv, args.locks, True)
        r = run_one("redis", redis_argv, args.locks, False)
        times["baton"].append(b)
        times["redis"].append(r)
        ratios.append(b / r)
        print(f"run {run + 1}: {args.locks} locks: baton back in {b:.2f} s, Redis {r:.2f} s, ratio {b / r:.2f}",
              flush=True)
    print(f"median: baton {statistics.median(times['baton']):.2f} s, Redis {statistics.median(times['redis']):.2f} s, "
          f"baton/Redis {statistics.median(ratios):.2f} (spread {min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
