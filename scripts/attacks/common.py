"""What the attack scripts share: a RESP client, a server on a free loopback port, /proc figures and
the well-behaved probe client. Loopback only."""

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

HOST = "127.0.0.1"


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        arg = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


class Client:
    """A blocking RESP client. Simple strings and errors come back as the whole line (b"+OK",
    b"-ERR ..."), so callers can tell them apart without exceptions."""

    def __init__(self, port, password=None, timeout=None):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.pos = 0
        if password:
            self.call("AUTH", password)

    def _fill(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("closed")
        # Compacting only now and then keeps huge pipelined replies from being copied per reply.
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
        """One reply and its size on the wire (state_growth measures the size of big replies)."""
        line = self._line()
        kind, rest = line[:1], line[1:]
        size = len(line) + 2
        if kind in (b"+", b"-"):
            return line, size
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
            if n < 0:
                return None, size
            items = []
            for _ in range(n):
                item, item_size = self.read()
                items.append(item)
                size += item_size
            return items, size
        raise ValueError(line)

    def reply(self):
        return self.read()[0]

    def call(self, *args):
        self.sock.sendall(resp(*args))
        return self.reply()

    def pipeline(self, requests, batch=2000):
        """Sends requests in batches, reading every reply (keeps the server's buffers small)."""
        pending = []
        for request in requests:
            pending.append(request)
            if len(pending) == batch:
                self._flush(pending)
                pending = []
        if pending:
            self._flush(pending)

    def _flush(self, requests):
        self.sock.sendall(b"".join(requests))
        for _ in requests:
            self.read()


def info_fields(conn, section):
    """INFO `section` as a dict of field to text."""
    text = conn.call("INFO", section).decode()
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


class Server:
    """baton, or redis-server (told apart by the binary's name), on a free loopback port."""

    def __init__(self, binary, extra=(), password=None, ulimit=None, stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL):
        self.port = free_port()
        self.password = password
        self.redis = os.path.basename(binary).startswith("redis")
        argv = [binary, "--bind", HOST, "--port", str(self.port)]
        self.dir = None
        if self.redis:
            argv += ["--save", "", "--appendonly", "no"]
        else:
            # baton's journal, on by default: a directory of this server's own.
            self.dir = tempfile.mkdtemp(prefix="baton-attack-")
            argv += ["--dir", self.dir]
        if password:
            argv += ["--requirepass", password]
        argv += list(extra)
        if ulimit:
            argv = ["sh", "-c", f'ulimit -n {ulimit} && exec "$0" "$@"'] + argv
        self.argv, self.stdout, self.stderr = argv, stdout, stderr
        self.start()

    def start(self, wait_s=10):
        # NO_COLOR: whoever reads the log counts plain lines, not escape codes.
        self.proc = subprocess.Popen(self.argv, stdout=self.stdout, stderr=self.stderr,
                                     env={**os.environ, "NO_COLOR": "1"})
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                Client(self.port, self.password, timeout=1).call("PING")
                return
            except OSError:
                time.sleep(0.05)
        self.proc.kill()
        raise SystemExit("server did not start")

    def rss_kb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

    def rss_mb(self):
        return self.rss_kb() / 1024

    def cpu_seconds(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def restart(self, wait_s=60):
        """SIGTERM (a clean stop), then the same command line on the same port and directory."""
        self.proc.terminate()
        self.proc.wait()
        self.start(wait_s)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)


class Probe(threading.Thread):
    """The well-behaved client: PING, take and release a lock (SET NX PX + DEL on Redis), every
    10 ms; keeps every round trip. A failed round counts as an error and the probe reconnects, so
    one stall does not end the measurement."""

    def __init__(self, port, redis, password=None):
        super().__init__(daemon=True)
        self.port, self.redis, self.password = port, redis, password
        self.samples, self.errors = [], 0
        self.stop = threading.Event()

    @property
    def worst(self):
        return max(self.samples, default=0.0)

    @property
    def rounds(self):
        return len(self.samples)

    def p99(self):
        ordered = sorted(self.samples)
        return ordered[int(len(ordered) * 0.99)]

    def _round(self, conn):
        conn.call("PING")
        if self.redis:
            conn.call("SET", "probe", "me", "NX", "PX", 30000)
            conn.call("DEL", "probe")
            return
        reply = conn.call("LOCK.TRY", "probe", "me")
        if not (isinstance(reply, list) and reply[0] == b"ACQUIRED"):
            raise ValueError(reply)
        conn.call("LOCK.UNLOCK", "probe", "me", reply[1], "SUCCESS")

    def run(self):
        conn = None
        while not self.stop.is_set():
            start = time.perf_counter()
            try:
                conn = conn or Client(self.port, self.password, timeout=30)
                self._round(conn)
                self.samples.append(time.perf_counter() - start)
            except (OSError, ValueError):
                self.errors += 1
                conn = None
                time.sleep(0.1)
            time.sleep(0.01)
