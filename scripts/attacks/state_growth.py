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

--threads 1 runs baton on one worker thread, as Redis runs commands on one thread: then any
stretch of work that does not yield stalls every other client, however many cores are free.

BINARY is target/release/baton or `redis` (redis-server: DEBUG POPULATE + INFO; a list of N
elements with LPOS/LREM for the queue; a client blocked on BLPOP over N keys closing).
"""

import argparse
import multiprocessing
import os
import socket
import subprocess
import sys
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(binary, port, extra_args=()):
    if binary == "redis":
        cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--enable-debug-command", "yes"]
    else:
        cmd = [binary, "--bind", "127.0.0.1", "--port", str(port), "--lease-ms", "600000", *extra_args]
    # The server's default log level (info), as an operator runs it; the log itself is discarded.
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("server did not start")


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Conn:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.pos = 0

    def _fill(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise EOFError
        if self.pos > (1 << 20):
            del self.buf[:self.pos]
            self.pos = 0
        self.buf += chunk

    def _line(self):
        while (end := self.buf.find(b"\r\n", self.pos)) < 0:
            self._fill()
        line = bytes(self.buf[self.pos:end])
        self.pos = end + 2
        return line

    def read(self):
        """One reply, parsed (bulk payloads as bytes). Returns (value, wire bytes)."""
        line = self._line()
        kind, rest = line[:1], line[1:]
        size = len(line) + 2
        if kind in b"+-":
            return rest, size
        if kind == b":":
            return int(rest), size
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None, size
            while len(self.buf) < self.pos + n + 2:
                self._fill()
            data = bytes(self.buf[self.pos:self.pos + n])
            self.pos += n + 2
            return data, size + n + 2
        if kind == b"*":
            n = int(rest)
            items = []
            for _ in range(max(n, 0)):
                item, item_size = self.read()
                items.append(item)
                size += item_size
            return items, size
        raise ValueError(line)

    def call(self, *args):
        self.sock.sendall(resp(*args))
        return self.read()[0]

    def pipeline(self, requests, batch=2000):
        """Sends requests in batches, reading every reply (keeps the server's buffers small)."""
        batch_buf, pending = [], 0
        for request in requests:
            batch_buf.append(request)
            if len(batch_buf) == batch:
                self.sock.sendall(b"".join(batch_buf))
                for _ in batch_buf:
                    self.read()
                batch_buf = []
        if batch_buf:
            self.sock.sendall(b"".join(batch_buf))
            for _ in batch_buf:
                self.read()


def probe(port, redis, stop_at, out):
    """The well-behaved client: PING + TRY/UNLOCK (SET NX/DEL) every 10 ms; worst latency."""
    conn = Conn(port)
    samples = []
    while time.time() < stop_at:
        t0 = time.perf_counter()
        conn.call("PING")
        if redis:
            conn.call("SET", "probe", "1", "NX", "PX", "1000")
            conn.call("DEL", "probe")
        else:
            reply = conn.call("LOCK.TRY", "probe", "probe", "PX", "1000")
            conn.call("LOCK.UNLOCK", "probe", "probe", reply[1], "SUCCESS")
        samples.append(time.perf_counter() - t0)
        time.sleep(0.01)
    samples.sort()
    out.put((samples[-1] * 1000, samples[int(len(samples) * 0.99)] * 1000, len(samples)))


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def with_probe(port, redis, pid, seconds, attack):
    """Runs attack() while the probe runs; returns the probe's figures and the server's CPU%."""
    # Spawned, not forked: a forked probe would inherit the attacker's sockets and keep them open.
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    stop_at = time.time() + seconds
    p = context.Process(target=probe, args=(port, redis, stop_at, out))
    cpu0, t0 = cpu_seconds(pid), time.time()
    p.start()
    time.sleep(0.3)
    extra = attack(stop_at)
    worst, p99, count = out.get()
    p.join()
    cpu = (cpu_seconds(pid) - cpu0) / (time.time() - t0) * 100
    return worst, p99, count, cpu, extra


def fill_locks(conn, redis, count, prefix):
    if redis:
        conn.call("DEBUG", "POPULATE", count, prefix)
    else:
        conn.pipeline(resp("LOCK.TRY", f"{prefix}:{i}", "holder", "PX", 600000) for i in range(count))


def attack_info(args, port, pid, redis):
    holder = Conn(port)
    fill_locks(holder, redis, args.keys, "k")
    looper = Conn(port)
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

    worst, p99, count, cpu, loops = with_probe(port, redis, pid, args.seconds, loop_info)
    timings.sort()
    return (f"info keys={args.keys} info_median_ms={timings[10]:.2f} info_max_ms={timings[-1]:.2f} "
            f"info_calls={loops} probe_worst_ms={worst:.1f} probe_p99_ms={p99:.1f} probes={count} "
            f"cpu_pct={cpu:.0f} rss_mb={rss_mb(pid):.0f}")


def attack_close(args, port, pid, redis):
    holder = Conn(port)
    if redis:
        # The nearest Redis has: one client blocked on BLPOP over N keys, then closing.
        keys = [f"k:{i}" for i in range(args.keys)]
        holder.sock.sendall(resp("BLPOP", *keys, 0))
    else:
        fill_locks(holder, redis, args.keys, "k")
    time.sleep(1.0)
    rss_before = rss_mb(pid)

    def close(stop_at):
        time.sleep(0.5)
        t0 = time.perf_counter()
        holder.sock.close()
        checker = Conn(port)
        # DBSIZE (baton) drops to 0 once every lock is released; Redis: the client count.
        while True:
            if redis:
                if b"connected_clients:2" in checker.call("INFO", "clients"):
                    break
            elif checker.call("DBSIZE") == 0:
                break
            time.sleep(0.001)
        released_ms = (time.perf_counter() - t0) * 1000
        while time.time() < stop_at:
            time.sleep(0.05)
        return released_ms

    worst, p99, count, cpu, released_ms = with_probe(port, redis, pid, args.seconds, close)
    return (f"close keys={args.keys} release_ms={released_ms:.0f} probe_worst_ms={worst:.1f} "
            f"probe_p99_ms={p99:.1f} probes={count} cpu_pct={cpu:.0f} rss_mb={rss_before:.0f}")


def attack_queue(args, port, pid, redis):
    filler = Conn(port)
    n = args.waiters
    if redis:
        filler.pipeline(resp("RPUSH", "q", *[f"w{j}" for j in range(i, min(i + 1000, n))]) for i in range(0, n, 1000))
    else:
        filler.call("LOCK.TRY", "q", "holder", "PX", 600000)
        filler.pipeline(resp("LOCK.TRY", "q", f"w{i}", "PX", 600000) for i in range(n))
    other = Conn(port)
    timings = []
    for i in range(50):
        t0 = time.perf_counter()
        if redis:
            other.call("RPUSH", "q", f"x{i}")
            other.call("LPOS", "q", f"x{i}")
            other.call("LREM", "q", 1, f"w{n // 2 + i}")
        else:
            other.call("LOCK.TRY", "q", f"x{i}", "PX", 600000)
            other.call("LOCK.TRY", "q", f"w{n // 2 + i}", "PX", 600000)
            other.call("LOCK.CANCEL", "q", f"w{n // 2 + i}")
        timings.append((time.perf_counter() - t0) * 1000 / 3)
    timings.sort()
    rss0 = rss_mb(pid)
    info_conn = Conn(port)
    if redis:
        info_conn.sock.sendall(resp("LRANGE", "q", 0, -1))
    else:
        info_conn.sock.sendall(resp("LOCK.INFO", "q"))
    _, info_bytes = info_conn.read()

    def loop_queue_ops(stop_at):
        i = 0
        while time.time() < stop_at:
            owner = f"w{n // 2 + 100 + i}"
            if redis:
                other.call("LPOS", "q", owner)
                other.call("LREM", "q", 1, owner)
            else:
                other.call("LOCK.TRY", "q", owner, "PX", 600000)
                other.call("LOCK.CANCEL", "q", owner)
            i += 1
        return i

    worst, p99, count, cpu, ops = with_probe(port, redis, pid, args.seconds, loop_queue_ops)
    return (f"queue waiters={n} op_median_ms={timings[25]:.3f} op_max_ms={timings[-1]:.3f} "
            f"info_reply_bytes={info_bytes} loop_ops={ops} probe_worst_ms={worst:.1f} probe_p99_ms={p99:.1f} "
            f"cpu_pct={cpu:.0f} rss_mb={rss0:.0f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("attack", choices=["info", "close", "queue"])
    parser.add_argument("binary")
    parser.add_argument("--keys", type=int, default=None)
    parser.add_argument("--waiters", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=None, help="baton's --threads (default: one per core)")
    args = parser.parse_args()
    if args.keys is None:
        args.keys = 2_000_000 if args.attack == "info" else 300_000
    redis = args.binary == "redis"
    port = free_port()
    server = start_server(args.binary, port, [] if args.threads is None else ["--threads", str(args.threads)])
    try:
        attack = {"info": attack_info, "close": attack_close, "queue": attack_queue}[args.attack]
        print(f"{os.path.basename(args.binary)} {attack(args, port, server.pid, redis)}", flush=True)
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
