#!/usr/bin/env python3
"""Issue 10, items 8-13 (logs, signals, sockets): each attack against one server, with the figures
the issue asks for. Loopback only; every attack is bounded in connections and in time.

    scripts/attacks/ops.py ATTACK [--server baton|redis] [--bin PATH] [--seconds N]

ATTACK is one of: log-flood, metrics-idle, ulimit, slow-reader, signals, keepalive.
--bin is the baton binary (default target/release/baton): pass an older build to get "before".
Prints one line per run: the attack's outcome, the server's RSS before/peak, its CPU (% of one
core) over the attack, and the worst round-trip of a well-behaved client doing PING + lock/unlock
(LOCK.TRY/UNLOCK on baton, SET NX/DEL on Redis) every 10 ms during the attack.
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import HOST, Client, Probe, free_port, resp  # noqa: E402


def connect(port, timeout=10.0):
    """These attacks give up on a reply after 10 s: a hung server is an outcome, not a wait."""
    return Client(port, timeout=timeout)


class Server(common.Server):
    """Pipes the server's stderr to a reader thread that counts it (log-flood reads it slowly)."""

    def __init__(self, kind, binary, extra=(), ulimit=None, stderr_reader=None):
        super().__init__("redis-server" if kind == "redis" else binary, extra, ulimit=ulimit,
                         stderr=subprocess.PIPE)
        self.stderr_bytes = 0
        threading.Thread(target=stderr_reader or count_stderr, args=(self,), daemon=True).start()


def count_stderr(server):
    for line in server.proc.stderr:
        server.stderr_bytes += len(line)


def measured(server, kind, attack, seconds):
    """Runs attack(stop_event) for `seconds` beside the probe; returns (outcome, figures)."""
    rss_before, cpu_before, peak = server.rss_kb(), server.cpu_seconds(), 0
    probe = Probe(server.port, kind == "redis")
    probe.start()
    stop = threading.Event()
    result = {}
    worker = threading.Thread(target=lambda: result.update(outcome=attack(stop)), daemon=True)
    started = time.time()
    worker.start()
    while time.time() - started < seconds and worker.is_alive():
        if server.proc.poll() is not None:
            break
        peak = max(peak, server.rss_kb())
        time.sleep(0.1)
    stop.set()
    worker.join(30)
    elapsed = time.time() - started
    probe.stop.set()
    probe.join(5)
    alive = server.proc.poll() is None
    cpu = (server.cpu_seconds() - cpu_before) / elapsed * 100 if alive else float("nan")
    figures = (f"rss {rss_before // 1024}->{peak // 1024} MB, cpu {cpu:.0f}%, "
               f"probe worst {probe.worst * 1000:.0f} ms over {probe.rounds} rounds ({probe.errors} errors)")
    return result.get("outcome", "attack did not finish"), figures


# ---------------------------------------------------------------------------------------------
# Attacks


def log_flood(args):
    """Item 8: FAILURE with a 64 KiB REASON in a loop, while stderr is read at 400 KB/s."""
    def slow_reader(server):
        while True:
            chunk = server.proc.stderr.read1(4096)
            if not chunk:
                return
            server.stderr_bytes += len(chunk)
            time.sleep(0.01)

    server = Server(args.server, args.bin, stderr_reader=slow_reader)
    reason = b"r" * 65536

    def attack(stop):
        counts = [0] * 4

        def loop(i):
            conn = connect(server.port)
            while not stop.is_set():
                if args.server == "redis":
                    conn.call("SET", f"k{i}", reason)
                    conn.call("DEL", f"k{i}")
                else:
                    token = conn.call("LOCK.TRY", f"k{i}", "a")[1]
                    conn.call("LOCK.UNLOCK", f"k{i}", "a", token, "FAILURE", "REASON", reason)
                counts[i] += 1

        threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return f"{sum(counts)} failures sent"

    outcome, figures = measured(server, args.server, attack, args.seconds)
    dropped = ""
    if args.server == "baton":
        info = connect(server.port).call("INFO", "stats").decode()
        dropped = next((l for l in info.split("\r\n") if l.startswith("log_lines_dropped")), "no log_lines_dropped")
    print(f"log-flood {args.server}: {outcome}, stderr read {server.stderr_bytes >> 10} KiB, {dropped}; {figures}")
    server.stop()


def metrics_idle(args):
    """Item 11: 2000 idle connections to the metrics port of a server limited to 1024 files."""
    metrics_port = free_port()
    server = Server("baton", args.bin, extra=["--metrics-addr", f"{HOST}:{metrics_port}"], ulimit=1024)
    held = []

    def attack(stop):
        for _ in range(2000):
            try:
                held.append(socket.create_connection((HOST, metrics_port), timeout=2))
            except OSError:
                break
        stop.wait()
        return f"{len(held)} idle connections opened"

    outcome, figures = measured(server, "baton", attack, args.seconds)
    log_kib = server.stderr_bytes >> 10
    try:
        s = socket.create_connection((HOST, metrics_port), timeout=5)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        scrape = s.recv(64).split(b"\r\n")[0].decode()
    except OSError as error:
        scrape = f"scrape failed: {error}"
    print(f"metrics-idle baton: {outcome}, log {log_kib} KiB during the attack, then a scrape: {scrape}; {figures}")
    for s in held:
        s.close()
    server.stop()


def ulimit_clients(args):
    """Item 11: maxclients 1000 with `ulimit -n 64`: 100 clients send PING."""
    server = Server(args.server, args.bin, extra=["--maxclients", "1000"], ulimit=64)

    def attack(stop):
        tally = {"PONG": 0, "refused": 0, "no answer": 0}
        held = []
        for _ in range(100):
            if stop.is_set():
                break
            try:
                s = socket.create_connection((HOST, server.port), timeout=2)
                s.sendall(b"PING\r\n")
                answer = s.recv(100)
                tally["PONG" if answer.startswith(b"+PONG") else "refused"] += 1
                held.append(s)
            except OSError:
                tally["no answer"] += 1
        return ", ".join(f"{v} {k}" for k, v in tally.items())

    outcome, figures = measured(server, args.server, attack, args.seconds)
    print(f"ulimit {args.server}: {outcome}; {figures}")
    server.stop()


def slow_reader(args):
    """Item 13: ECHO of 16 MiB read at 1 MB/s (baton's default 10 s stall timeout)."""
    size = 16 << 20
    extra = [] if args.server == "redis" else ["--max-bulk-bytes", str(size), "--max-query-buffer-bytes", str(2 * size)]
    server = Server(args.server, args.bin, extra=extra)

    def attack(stop):
        s = socket.create_connection((HOST, server.port), timeout=30)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        s.sendall(resp("ECHO", b"x" * size))
        received, started = 0, time.time()
        while received < size and time.time() - started < 40:
            try:
                chunk = s.recv(64 * 1024)
            except OSError:
                break
            if not chunk:
                break
            received += len(chunk)
            time.sleep(len(chunk) / 1e6)
        return f"{received / 1e6:.1f} of {size / 1e6:.1f} MB received in {time.time() - started:.1f} s"

    outcome, figures = measured(server, args.server, attack, 45)
    print(f"slow-reader {args.server}: {outcome}; {figures}")
    server.stop()


def signals(args):
    """Item 9: each signal with a holder and a blocked waiter (BLPOP on Redis)."""
    for name in ["HUP", "USR1", "USR2", "QUIT"]:
        server = Server(args.server, args.bin)
        holder, waiter = connect(server.port), connect(server.port, timeout=3)
        if args.server == "redis":
            waiter.sock.sendall(resp("BLPOP", "q", 0))
        else:
            holder.call("LOCK.TRY", "k", "holder")
            waiter.sock.sendall(resp("LOCK.WAIT", "k", "waiter", 0))
        time.sleep(0.3)
        server.proc.send_signal(getattr(signal, "SIG" + name))
        try:
            answer = waiter.reply()
        except (OSError, ConnectionError) as error:
            answer = f"no answer ({type(error).__name__})"
        time.sleep(0.3)
        code = server.proc.poll()
        state = "still serving" if code is None else f"exited with {code}"
        print(f"signal {args.server} SIG{name}: {state}; the blocked waiter got {answer!r}")
        server.stop()


def keepalive(args):
    """Item 12: the keepalive timer on the server's side of a client connection (ss -o)."""
    server = Server(args.server, args.bin)
    conn = connect(server.port)
    conn.call("PING")
    local_port = conn.sock.getsockname()[1]
    ss = subprocess.run(["ss", "-tno", "state", "established", f"( sport = :{server.port} and dport = :{local_port} )"],
                        capture_output=True, text=True).stdout
    timer = next((w for w in ss.split() if w.startswith("timer:")), "no timer (no keepalive)")
    print(f"keepalive {args.server}: server socket {timer}")
    server.stop()


ATTACKS = {"log-flood": log_flood, "metrics-idle": metrics_idle, "ulimit": ulimit_clients,
           "slow-reader": slow_reader, "signals": signals, "keepalive": keepalive}

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("attack", choices=ATTACKS)
    parser.add_argument("--server", choices=["baton", "redis"], default="baton")
    parser.add_argument("--bin", default="target/release/baton")
    parser.add_argument("--seconds", type=float, default=5)
    ATTACKS[parser.parse_args().attack](parser.parse_args())
