#!/usr/bin/env python3
"""Memory attacks of issue 10 (items 1-4), measured against baton and against Redis.

Each run starts the server on a free loopback port, runs one bounded attack (a fixed number of
connections and requests, and a time cap), and prints one line: the server's RSS before, at its
peak and at the end, the CPU it used during the attack (percent of one core), and the worst
round trip a well-behaved client saw meanwhile (PING, then take and release a lock, every 10 ms).
Nothing here asserts: the regression tests are in tests/it/memory.rs.

    scripts/attacks/memory.py preauth  target/release/baton
    scripts/attacks/memory.py deferred target/release/baton
    scripts/attacks/memory.py maxmemory target/release/baton --maxmemory 100mb
    scripts/attacks/memory.py release  target/release/baton
    scripts/attacks/memory.py keep     target/release/baton
    scripts/attacks/memory.py preauth  redis-server            # the same bytes against Redis

Only loopback is used; every attack stops by itself within about a minute.
"""

import argparse
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Client, Probe, Server, resp  # noqa: E402

PASSWORD = "pw"


def measure(server, attack):
    """Runs `attack` while sampling RSS and probing; returns the figures."""
    before = server.rss_mb()
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], server.rss_mb())
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    probe = Probe(server.port, server.redis, server.password)
    cpu0, t0 = server.cpu_seconds(), time.monotonic()
    sampler.start()
    probe.start()
    note = attack(server)
    elapsed = time.monotonic() - t0
    cpu = 100 * (server.cpu_seconds() - cpu0) / elapsed
    during = server.rss_mb()
    probe.stop.set()
    probe.join(timeout=31)
    done.set()
    sampler.join()
    return before, max(peak[0], during), during, cpu, probe.worst * 1000, probe.errors, note


def park(port, header, body, chunk=65536):
    """One connection that announces a big bulk and sends it slowly without finishing it."""
    s = socket.create_connection(("127.0.0.1", port))
    try:
        s.sendall(header)
        for offset in range(0, len(body), chunk):
            s.sendall(body[offset:offset + chunk])
    except OSError:
        pass
    return s


def still_open(sock):
    """Whether the server has neither closed `sock` nor answered on it."""
    sock.setblocking(False)
    try:
        sock.recv(1)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False


def attack_preauth(server):
    """100 unauthenticated connections each park almost 8 MB: an AUTH of 10 arguments of 1 MB,
    of which all but the last arrive."""
    arg = 1_000_000
    header = b"*10\r\n$4\r\nAUTH\r\n"
    body = (b"$%d\r\n%s\r\n" % (arg, b"x" * arg)) * 7 + b"$%d\r\n" % arg + b"x" * (arg // 2)
    socks = [park(server.port, header, body) for _ in range(100)]
    time.sleep(1)
    open_ = sum(still_open(s) for s in socks)
    rss = server.rss_mb()
    for s in socks:
        s.close()
    return f"{open_}/100 attack connections still open, rss with them {rss:.0f} MB"


def attack_deferred(server):
    """20 connections block in LOCK.WAIT (or BLPOP on Redis), then trickle small requests, each
    8 to a segment, up to ~95 % of the 8 MiB limit by the old count (20 bytes a request)."""
    holder = Client(server.port, server.password)
    if not server.redis:
        holder.call("LOCK.TRY", "attack", "holder", "PX", 600000)
    socks = []
    for i in range(20):
        s = socket.create_connection(("127.0.0.1", server.port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if server.redis:
            s.sendall(resp("BLPOP", "attack", 0))
        else:
            s.sendall(resp("LOCK.WAIT", "attack", f"w{i}", 0))
        socks.append(s)
    time.sleep(0.2)
    batch = 8
    pings = resp("PING") * batch
    budget = int(0.95 * 8 * 1024 * 1024 / 20)
    deadline = time.monotonic() + 25
    sent = 0
    while sent < budget and time.monotonic() < deadline:
        for s in socks:
            try:
                s.sendall(pings)
            except OSError:
                pass
        sent += batch
    time.sleep(0.5)
    rss = server.rss_mb()
    closed = 0
    for s in socks:
        s.setblocking(False)
        try:
            data = s.recv(1 << 20)
            closed += data == b"" or b"limit" in data
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
        s.close()
    return f"{sent} requests on each of 20 blocked connections, {closed} closed by the server, rss {rss:.0f} MB"


def attack_maxmemory(server):
    """One client keeps 64 KiB results (KEEP 10 min; on Redis, SET of 64 KiB values) for 10 s."""
    c = Client(server.port, server.password)
    value = b"r" * 65536
    deadline = time.monotonic() + 10
    ok = oom = 0
    i = 0
    while time.monotonic() < deadline and i < 200_000:
        key = f"big:{i}"
        i += 1
        if server.redis:
            reply = c.call("SET", key, value)
            ok, oom = (ok + 1, oom) if reply == b"+OK" else (ok, oom + 1)
            continue
        reply = c.call("LOCK.TRY", key, "me")
        if not isinstance(reply, list):
            oom += 1
            continue
        reply = c.call("LOCK.UNLOCK", key, "me", reply[1], "SUCCESS", "RESULT", value, "KEEP", 600000)
        ok, oom = (ok + 1, oom) if isinstance(reply, int) else (ok, oom + 1)
    return f"{ok} kept, {oom} refused"


def attack_release(server):
    """1 M locks held by one connection (on Redis, 1 M SET PX keys), then released; RSS 30 s later."""
    c = Client(server.port, server.password)
    batch = 10_000
    for start in range(0, 1_000_000, batch):
        if server.redis:
            c.sock.sendall(b"".join(resp("SET", f"hold:{i}", "owner-1", "PX", 600000) for i in range(start, start + batch)))
        else:
            c.sock.sendall(b"".join(resp("LOCK.TRY", f"hold:{i}", "owner-1", "PX", 600000) for i in range(start, start + batch)))
        for _ in range(batch):
            c.reply()
    held = server.rss_mb()
    if server.redis:
        c.call("FLUSHALL")
    c.sock.close()
    time.sleep(30)
    return f"rss while holding {held:.0f} MB, 30 s after the release {server.rss_mb():.0f} MB"


def attack_keep(server):
    """3,000 results of 64 KiB kept for 3 s (on Redis, SET PX 3000), then left to expire."""
    c = Client(server.port, server.password)
    value = b"r" * 65536
    for i in range(3000):
        key = f"keep:{i}"
        if server.redis:
            c.call("SET", key, value, "PX", 3000)
            continue
        reply = c.call("LOCK.TRY", key, "me")
        c.call("LOCK.UNLOCK", key, "me", reply[1], "SUCCESS", "RESULT", value, "KEEP", 3000)
    held = server.rss_mb()
    time.sleep(20)
    return f"rss with the results {held:.0f} MB, 20 s later (all expired) {server.rss_mb():.0f} MB"


ATTACKS = {
    "preauth": (attack_preauth, True),
    "deferred": (attack_deferred, False),
    "maxmemory": (attack_maxmemory, False),
    "release": (attack_release, False),
    "keep": (attack_keep, False),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("attack", choices=ATTACKS)
    parser.add_argument("binary", help="target/release/baton, or redis-server")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="more server flags (e.g. --maxmemory 100mb)")
    args = parser.parse_args()
    attack, needs_password = ATTACKS[args.attack]
    server = Server(args.binary, args.extra, PASSWORD if needs_password else None)
    try:
        before, peak, end, cpu, worst_ms, failures, note = measure(server, attack)
    finally:
        server.stop()
    name = os.path.basename(args.binary)
    print(
        f"{args.attack} {name} {' '.join(args.extra)}: rss before {before:.0f} MB, peak {peak:.0f} MB, "
        f"end {end:.0f} MB; cpu {cpu:.0f}%; probe worst {worst_ms:.1f} ms, probe failures {failures}; {note}"
    )


if __name__ == "__main__":
    main()
