#!/usr/bin/env python3
"""What a blocked LOCK.WAIT costs the server, beyond its connection.

Starts target/release/baton (memory only, its own temporary --dir), opens N connections and
PINGs each (idle connections), then blocks each in LOCK.WAIT on one held key, and prints the
growth per connection of INFO's used_memory (bytes the allocator handed out) and of the
process's RSS at each step. bench.sh's W4 row "RSS growth per waiter over an idle connection"
measures the same against Redis; this one is quicker and shows the allocator's view too.

    scripts/waiter-memory.py [--waiters 10000] [--key pull:sha256:...] [--owner-bytes N]
                             [--binary target/release/baton]

Owners are w0, w1, ... as in bench.sh's W4, or numbers zero-padded to --owner-bytes.
"""

import argparse
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time


def command(sock, *args):
    sock.sendall(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args))


def reply(sock):
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        data += chunk
    return data


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--waiters", type=int, default=10000)
    parser.add_argument("--key", default="pull:sha256:4f1e2d3c4b5a69788796a5b4c3d2e1f0")
    parser.add_argument("--owner-bytes", type=int, default=0, help="pad owners to this length (36: UUID-sized)")
    parser.add_argument("--binary", default="target/release/baton")
    options = parser.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < options.waiters + 100:
        sys.exit(f"ulimit -n is {hard}: too low for {options.waiters} connections")
    key = options.key.encode()
    port = free_port()
    data_dir = tempfile.mkdtemp(prefix="baton-waiter-memory-")
    server = subprocess.Popen(
        [options.binary, "--port", str(port), "--appendonly", "no", "--dir", data_dir,
         "--maxclients", str(options.waiters + 100)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                control = socket.create_connection(("127.0.0.1", port))
                break
            except OSError:
                time.sleep(0.1)
        else:
            sys.exit("the server did not start")

        def used_memory():
            command(control, b"INFO", b"memory")
            time.sleep(0.05)
            info = control.recv(1 << 20).decode()
            return int(next(line for line in info.split("\r\n") if line.startswith("used_memory:")).split(":")[1])

        def rss():
            with open(f"/proc/{server.pid}/status") as status:
                return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS"))

        command(control, b"LOCK.TRY", key, b"holder")
        reply(control)
        used0, rss0 = used_memory(), rss()
        connections = []
        for _ in range(options.waiters):
            sock = socket.create_connection(("127.0.0.1", port))
            command(sock, b"PING")
            connections.append(sock)
        for sock in connections:
            reply(sock)
        time.sleep(0.5)
        used1, rss1 = used_memory(), rss()
        for number, sock in enumerate(connections):
            owner = b"%0*d" % (options.owner_bytes, number) if options.owner_bytes else b"w%d" % number
            command(sock, b"LOCK.WAIT", key, owner, b"0")
        want = b":%d" % options.waiters
        for _ in range(600):
            command(control, b"LOCK.INFO", key)
            time.sleep(0.1)
            parts = control.recv(1 << 20).split(b"\r\n")
            blocked = [i for i, part in enumerate(parts) if part.endswith(b"blocked")]
            if blocked and parts[blocked[0] + 1] == want:
                break
        else:
            sys.exit("the waiters never all blocked")
        time.sleep(0.5)
        used2, rss2 = used_memory(), rss()
        n = options.waiters
        print(f"idle connection: used_memory {(used1 - used0) / n:.0f} B, RSS {(rss1 - rss0) / n:.0f} B")
        print(f"blocked waiter over its idle connection: used_memory {(used2 - used1) / n:.0f} B, "
              f"RSS {(rss2 - rss1) / n:.0f} B ({n} waiters, a {len(key)}-byte key)")
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
