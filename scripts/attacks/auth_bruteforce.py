#!/usr/bin/env python3
"""Issue 10, item 15: password guessing on one connection, bounded (GUESSES guesses, loopback).

Usage: auth_bruteforce.py SERVER_BINARY [redis|baton] [GUESSES]

Starts the server on a free loopback port with a password, sends GUESSES wrong AUTHs pipelined in
batches of 100 on one connection while a well-behaved client (PING + LOCK.TRY/UNLOCK, or PING +
SET/DEL against Redis) runs every 10 ms, then prints the guess rate, the well-behaved client's
worst latency, the server's RSS and CPU, how many log lines the attack produced and what INFO
counted. Figures only: nothing here asserts.
"""
import os
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import HOST, Client, Probe, Server  # noqa: E402

if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
    sys.exit(__doc__)
binary = sys.argv[1]
kind = sys.argv[2] if len(sys.argv) > 2 else "baton"
# Redis closes an unauthenticated client with more than 16 KiB of unread replies: stay below.
BATCH = 100
guesses = int(sys.argv[3]) if len(sys.argv) > 3 else 200_000
PASSWORD = "s3cret"

log = tempfile.NamedTemporaryFile(prefix="bruteforce-", suffix=".log", delete=False)
server = Server(binary, password=PASSWORD, stdout=log, stderr=subprocess.STDOUT)
try:
    admin = Client(server.port, PASSWORD)
    lines_before = sum(1 for _ in open(log.name, "rb"))
    probe = Probe(server.port, kind == "redis", PASSWORD)
    probe.start()
    cpu_before, started = server.cpu_seconds(), time.perf_counter()
    attacker = socket.create_connection((HOST, server.port))
    batch = b"*2\r\n$4\r\nAUTH\r\n$5\r\nguess\r\n" * BATCH
    sent = 0
    while sent < guesses:
        attacker.sendall(batch)
        expected, received = BATCH * len(b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"), 0
        while received < expected:
            received += len(attacker.recv(1 << 20))
        sent += BATCH
    elapsed = time.perf_counter() - started
    cpu = server.cpu_seconds() - cpu_before
    probe.stop.set()
    probe.join()
    stats = admin.call("INFO", "stats").decode().split("\r\n")
    denied = next((l.split(":", 1)[1] for l in stats if l.startswith("acl_access_denied_auth:")), "absent")
    lines = sum(1 for _ in open(log.name, "rb")) - lines_before
    print(f"{kind}: {sent} guesses in {elapsed:.2f} s = {sent / elapsed:,.0f}/s; server CPU {cpu / elapsed:.0%}; "
          f"RSS {server.rss_mb():.1f} MiB; worst well-behaved round trip {probe.worst * 1000:.1f} ms; "
          f"log lines {lines}; INFO acl_access_denied_auth={denied}")
finally:
    # terminate, not kill: a clean exit is part of what this run checks.
    server.proc.terminate()
    server.proc.wait(timeout=10)
    if server.proc.returncode not in (0, -15):
        print(open(log.name).read()[-2000:])
    os.unlink(log.name)
