#!/usr/bin/env python3
"""Issue 10, item 15: password guessing on one connection, bounded (GUESSES guesses, loopback).

Usage: auth_bruteforce.py SERVER_BINARY [redis|baton] [GUESSES]

Starts the server on a free loopback port with a password, sends GUESSES wrong AUTHs pipelined in
batches of 100 on one connection while a well-behaved client (PING + LOCK.TRY/UNLOCK, or PING +
SET/DEL against Redis) runs every 10 ms, then prints the guess rate, the well-behaved client's
worst latency, the server's RSS and CPU, how many log lines the attack produced and what INFO
counted. Figures only: nothing here asserts.
"""
import os, socket, subprocess, sys, tempfile, threading, time

import redis

binary = sys.argv[1]
kind = sys.argv[2] if len(sys.argv) > 2 else "baton"
# Redis closes an unauthenticated client with more than 16 KiB of unread replies: stay below.
BATCH = 100
guesses = int(sys.argv[3]) if len(sys.argv) > 3 else 200_000

with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
log = tempfile.NamedTemporaryFile(prefix="bruteforce-", suffix=".log", delete=False)
if kind == "redis":
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--requirepass", "s3cret"]
else:
    argv = [binary, "--port", str(port), "--requirepass", "s3cret"]
server = subprocess.Popen(argv, stdout=log, stderr=log)
try:
    admin = redis.Redis(port=port, password="s3cret")
    for _ in range(100):
        try:
            admin.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    lines_before = sum(1 for _ in open(log.name, "rb"))

    def cpu_ticks():
        fields = open(f"/proc/{server.pid}/stat").read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    def rss_kb():
        return next(int(l.split()[1]) for l in open(f"/proc/{server.pid}/status") if l.startswith("VmRSS"))

    worst = [0.0]
    stop = threading.Event()

    def well_behaved():
        client = redis.Redis(port=port, password="s3cret")
        while not stop.is_set():
            start = time.perf_counter()
            client.ping()
            if kind == "redis":
                client.set("k", "v")
                client.delete("k")
            else:
                token = client.execute_command("LOCK.TRY", "probe", "me")[1]
                client.execute_command("LOCK.UNLOCK", "probe", "me", token, "SUCCESS")
            worst[0] = max(worst[0], time.perf_counter() - start)
            time.sleep(0.01)

    probe_thread = threading.Thread(target=well_behaved)
    probe_thread.start()
    ticks, started = cpu_ticks(), time.perf_counter()
    attacker = socket.create_connection(("127.0.0.1", port))
    batch = b"*2\r\n$4\r\nAUTH\r\n$5\r\nguess\r\n" * BATCH
    sent = 0
    while sent < guesses:
        attacker.sendall(batch)
        expected, received = BATCH * len(b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"), 0
        while received < expected:
            received += len(attacker.recv(1 << 20))
        sent += BATCH
    elapsed = time.perf_counter() - started
    cpu = (cpu_ticks() - ticks) / os.sysconf("SC_CLK_TCK")
    stop.set()
    probe_thread.join()
    info = admin.info("stats")
    lines = sum(1 for _ in open(log.name, "rb")) - lines_before
    print(f"{kind}: {sent} guesses in {elapsed:.2f} s = {sent / elapsed:,.0f}/s; server CPU {cpu / elapsed:.0%}; "
          f"RSS {rss_kb() / 1024:.1f} MiB; worst well-behaved round trip {worst[0] * 1000:.1f} ms; "
          f"log lines {lines}; INFO acl_access_denied_auth={info.get('acl_access_denied_auth', 'absent')}")
finally:
    server.terminate()
    server.wait(timeout=10)
    if server.returncode not in (0, -15):
        print(open(log.name).read()[-2000:])
    os.unlink(log.name)
