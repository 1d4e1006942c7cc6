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
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "attacks"))
from common import free_port  # noqa: E402

HOST = "127.0.0.1"


def command(*args):
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        arg = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


class Conn:
    def __init__(self, port):
        self.sock = socket.create_connection((HOST, port), timeout=600)
        self.buf = b""

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self):
        """One reply, flattened enough for what this script reads."""
        line = self.line()
        kind, rest = line[:1], line[1:]
        if kind in (b"+", b"-", b":"):
            return line
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self.buf += self.sock.recv(1 << 20)
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data
        if kind in (b"*", b"%"):
            n = int(rest) * (2 if kind == b"%" else 1)
            return [self.reply() for _ in range(max(n, 0))]
        raise ValueError(line)


def fill(port, locks, baton):
    conn = Conn(port)
    batch = 10_000
    for start in range(0, locks, batch):
        reqs = []
        for i in range(start, min(locks, start + batch)):
            key = b"lock:%d" % i
            reqs.append(command("LOCK.TRY", key, "owner", "PX", 3_600_000) if baton
                        else command("SET", key, "owner", "NX", "PX", 3_600_000))
        conn.sock.sendall(b"".join(reqs))
        for _ in reqs:
            conn.reply()
    last = b"lock:%d" % (locks - 1)
    conn.sock.sendall(command("LOCK.TRY", last, "owner", "PX", 3_600_000) if baton else command("GET", last))
    return conn, conn.reply()


def start(argv, log):
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def wait_ping(port, proc, failure):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            conn = Conn(port)
            conn.sock.sendall(command("PING"))
            if conn.reply() == b"+PONG":
                conn.sock.close()
                return
        except (ConnectionError, OSError):
            pass
        time.sleep(0.02)
    raise SystemExit(failure)


def serving(port, key, baton, expected, deadline):
    while time.monotonic() < deadline:
        try:
            conn = Conn(port)
            conn.sock.sendall(command("PING"))
            if conn.reply() != b"+PONG":
                conn.sock.close()
                time.sleep(0.005)
                continue
            conn.sock.sendall(command("LOCK.TRY", key, "owner", "PX", 3_600_000) if baton else command("GET", key))
            got = conn.reply()
            conn.sock.close()
            return got == expected
        except (ConnectionError, OSError):
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
