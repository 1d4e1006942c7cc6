#!/usr/bin/env python3
"""Work that grows with the state (issue 10, items 5-7): measure what a big state costs the others.

Starts the server itself on a free loopback port (baton, or redis-server for the analogue), builds
the state with pipelined requests from one connection, runs the attack while a probe process
(PING, then TRY + UNLOCK, or SET NX + DEL on Redis, every 10 ms) records the worst latency it sees,
and prints one line of figures: RSS, server CPU during the attack, probe worst/p99 latency and the
attack's own figures. Bounded: every attack has a fixed count or duration; loopback only.

  state_growth.py info  BINARY [--keys 2000000]   INFO latency with N held locks, a client looping INFO
  state_growth.py close BINARY [--keys 300000]    a connection holding N locks closes
  state_growth.py queue BINARY [--waiters 1000000] TRY/CANCEL latency and LOCK.INFO size with N waiters
  state_growth.py rewrite BINARY [--keys 1000000] BGREWRITEAOF of the journal (Redis: of its AOF) with N held locks
  state_growth.py expire BINARY [--keys 300000]   N leases ending in the same millisecond (baton only)

--threads 1 runs baton on one worker thread, as Redis runs commands on one thread: then any
stretch of work that does not yield stalls every other client, however many cores are free.

BINARY is target/release/baton or `redis` (redis-server: DEBUG POPULATE + INFO; a list of N
elements with LPOS/LREM for the queue; a client blocked on BLPOP over N keys closing).
"""

import argparse
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Client, Probe, Server, info_fields, resp  # noqa: E402


def probe(port, redis, stop_at, out):
    """The probe's own process: the attacker's busy loop shares no GIL with it."""
    prober = Probe(port, redis)
    threading.Timer(stop_at - time.time(), prober.stop.set).start()
    prober.run()
    out.put((prober.worst * 1000, prober.p99() * 1000, prober.rounds))


def with_probe(server, seconds, attack):
    """Runs attack() while the probe runs; returns the probe's figures and the server's CPU%."""
    # Spawned, not forked: a forked probe would inherit the attacker's sockets and keep them open.
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    stop_at = time.time() + seconds
    p = context.Process(target=probe, args=(server.port, server.redis, stop_at, out))
    cpu0, t0 = server.cpu_seconds(), time.time()
    p.start()
    time.sleep(0.3)
    extra = attack(stop_at)
    worst, p99, count = out.get()
    p.join()
    cpu = (server.cpu_seconds() - cpu0) / (time.time() - t0) * 100
    return worst, p99, count, cpu, extra


def timed(start, done, stop_at):
    """The attack's own figure: milliseconds from start() until done() says so (polled), then idle
    until the probe stops."""
    time.sleep(0.5)
    t0 = time.perf_counter()
    start()
    while not done():
        time.sleep(0.001)
    took_ms = (time.perf_counter() - t0) * 1000
    while time.time() < stop_at:
        time.sleep(0.05)
    return took_ms


def fill_locks(conn, redis, count, prefix):
    if redis:
        conn.call("DEBUG", "POPULATE", count, prefix)
    else:
        conn.pipeline(resp("LOCK.TRY", f"{prefix}:{i}", "holder", "PX", 600000) for i in range(count))


def attack_info(args, server):
    holder = Client(server.port)
    fill_locks(holder, server.redis, args.keys, "k")
    looper = Client(server.port)
    timings = []
    for _ in range(20):
        t0 = time.perf_counter()
        looper.call("INFO")
        timings.append((time.perf_counter() - t0) * 1000)

    def loop_info(stop_at):
        n = 0
        while time.time() < stop_at:
            looper.call("INFO")
            n += 1
        return n

    worst, p99, count, cpu, loops = with_probe(server, args.seconds, loop_info)
    timings.sort()
    return (f"info keys={args.keys} info_median_ms={timings[10]:.2f} info_max_ms={timings[-1]:.2f} "
            f"info_calls={loops} probe_worst_ms={worst:.1f} probe_p99_ms={p99:.1f} probes={count} "
            f"cpu_pct={cpu:.0f} rss_mb={server.rss_mb():.0f}")


def attack_close(args, server):
    holder = Client(server.port)
    if server.redis:
        # The nearest Redis has: one client blocked on BLPOP over N keys, then closing.
        keys = [f"k:{i}" for i in range(args.keys)]
        holder.sock.sendall(resp("BLPOP", *keys, 0))
    else:
        fill_locks(holder, server.redis, args.keys, "k")
    time.sleep(1.0)
    rss_before = server.rss_mb()

    checker = Client(server.port)

    def released():
        # DBSIZE (baton) drops to 0 once every lock is released; Redis: the client count.
        if server.redis:
            return b"connected_clients:2" in checker.call("INFO", "clients")
        return checker.call("DBSIZE") == 0

    def close(stop_at):
        return timed(holder.sock.close, released, stop_at)

    worst, p99, count, cpu, released_ms = with_probe(server, args.seconds, close)
    return (f"close keys={args.keys} release_ms={released_ms:.0f} probe_worst_ms={worst:.1f} "
            f"probe_p99_ms={p99:.1f} probes={count} cpu_pct={cpu:.0f} rss_mb={rss_before:.0f}")


def attack_queue(args, server):
    filler = Client(server.port)
    n = args.waiters
    if server.redis:
        filler.pipeline(resp("RPUSH", "q", *[f"w{j}" for j in range(i, min(i + 1000, n))]) for i in range(0, n, 1000))
    else:
        filler.call("LOCK.TRY", "q", "holder", "PX", 600000)
        filler.pipeline(resp("LOCK.TRY", "q", f"w{i}", "PX", 600000) for i in range(n))
    other = Client(server.port)
    timings = []
    for i in range(50):
        t0 = time.perf_counter()
        if server.redis:
            other.call("RPUSH", "q", f"x{i}")
            other.call("LPOS", "q", f"x{i}")
            other.call("LREM", "q", 1, f"w{n // 2 + i}")
        else:
            other.call("LOCK.TRY", "q", f"x{i}", "PX", 600000)
            other.call("LOCK.TRY", "q", f"w{n // 2 + i}", "PX", 600000)
            other.call("LOCK.CANCEL", "q", f"w{n // 2 + i}")
        timings.append((time.perf_counter() - t0) * 1000 / 3)
    timings.sort()
    rss0 = server.rss_mb()
    info_conn = Client(server.port)
    if server.redis:
        info_conn.sock.sendall(resp("LRANGE", "q", 0, -1))
    else:
        info_conn.sock.sendall(resp("LOCK.INFO", "q"))
    _, info_bytes = info_conn.read()

    def loop_queue_ops(stop_at):
        i = 0
        while time.time() < stop_at:
            owner = f"w{n // 2 + 100 + i}"
            if server.redis:
                other.call("LPOS", "q", owner)
                other.call("LREM", "q", 1, owner)
            else:
                other.call("LOCK.TRY", "q", owner, "PX", 600000)
                other.call("LOCK.CANCEL", "q", owner)
            i += 1
        return i

    worst, p99, count, cpu, ops = with_probe(server, args.seconds, loop_queue_ops)
    return (f"queue waiters={n} op_median_ms={timings[25]:.3f} op_max_ms={timings[-1]:.3f} "
            f"info_reply_bytes={info_bytes} loop_ops={ops} probe_worst_ms={worst:.1f} probe_p99_ms={p99:.1f} "
            f"cpu_pct={cpu:.0f} rss_mb={rss0:.0f}")


def attack_rewrite(args, server):
    holder = Client(server.port)
    fill_locks(holder, server.redis, args.keys, "k")
    time.sleep(1.0)
    checker = Client(server.port)
    before = info_fields(checker, "persistence").get("journal_snapshots_written")

    def rewritten():
        info = info_fields(checker, "persistence")
        return (info.get("aof_rewrite_in_progress") == "0" and info.get("aof_rewrite_scheduled") == "0"
                and (server.redis or info.get("journal_snapshots_written") != before))

    def rewrite(stop_at):
        return timed(lambda: checker.call("BGREWRITEAOF"), rewritten, stop_at)

    worst, p99, count, cpu, rewrite_ms = with_probe(server, args.seconds, rewrite)
    return (f"rewrite keys={args.keys} rewrite_ms={rewrite_ms:.0f} probe_worst_ms={worst:.1f} "
            f"probe_p99_ms={p99:.1f} probes={count} cpu_pct={cpu:.0f} rss_mb={server.rss_mb():.0f}")


def attack_expire(args, server):
    """N locks with a 5 s lease, then a clean restart: the journal re-leases every recovered holder
    from the moment of recovery, so all N leases end in the same millisecond, 5 s later (holders
    that never came back). The probe runs across that moment."""
    if server.redis:
        raise SystemExit("expire: baton only (Redis keeps each key's own expiry time across a restart)")
    lease_ms = 5000
    holder = Client(server.port)
    holder.pipeline(resp("LOCK.TRY", f"k:{i}", "holder", "PX", lease_ms) for i in range(args.keys))
    # Stopped with the holder still connected: a server that stops releases nothing.
    server.restart()
    restarted = time.time()
    checker = Client(server.port)
    held = checker.call("DBSIZE")
    while not isinstance(held, int):  # -LOADING
        time.sleep(0.01)
        held = checker.call("DBSIZE")

    def expired(stop_at):
        while checker.call("DBSIZE") != 0:
            time.sleep(0.001)
        took_ms = (time.time() - restarted) * 1000 - lease_ms
        while time.time() < stop_at:
            time.sleep(0.05)
        return took_ms

    worst, p99, count, cpu, late_ms = with_probe(server, max(args.seconds, lease_ms / 1000 + 3), expired)
    return (f"expire keys={held} all_expired_ms_after_lease_end={late_ms:.0f} probe_worst_ms={worst:.1f} "
            f"probe_p99_ms={p99:.1f} probes={count} cpu_pct={cpu:.0f} rss_mb={server.rss_mb():.0f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("attack", choices=["info", "close", "queue", "rewrite", "expire"])
    parser.add_argument("binary")
    parser.add_argument("--keys", type=int, default=None)
    parser.add_argument("--waiters", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=None, help="baton's --threads (default: one fewer than the cores, at least one)")
    args = parser.parse_args()
    if args.keys is None:
        args.keys = {"info": 2_000_000, "rewrite": 1_000_000}.get(args.attack, 300_000)
    aof_dir = tempfile.mkdtemp(prefix="redis-aof-") if args.attack == "rewrite" and args.binary == "redis" else None
    if args.binary == "redis":
        aof = ["--appendonly", "yes", "--appendfsync", "everysec", "--dir", aof_dir] if aof_dir else []
        server = Server("redis-server", ["--enable-debug-command", "yes", *aof])
    else:
        threads = [] if args.threads is None else ["--threads", str(args.threads)]
        server = Server(args.binary, ["--lease-ms", "600000", *threads])
    try:
        attack = {
            "info": attack_info,
            "close": attack_close,
            "queue": attack_queue,
            "rewrite": attack_rewrite,
            "expire": attack_expire,
        }[args.attack]
        print(f"{os.path.basename(args.binary)} {attack(args, server)}", flush=True)
    finally:
        server.stop()
        if aof_dir:
            shutil.rmtree(aof_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
