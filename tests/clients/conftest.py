"""Shared fixtures for the client tests: baton servers on free loopback ports, and helpers.

The server binary is target/release/baton (scripts/test.sh builds it), or $BATON_BIN.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parents[2]
BATON = Path(os.environ.get("BATON_BIN", ROOT / "target" / "release" / "baton"))
HOST = "127.0.0.1"


def free_port():
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout=10.0, interval=0.02, message="condition"):
    """Polls predicate until it returns a truthy value, which is returned; fails after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def as_dict(reply):
    """A map reply as a dict of str keys: a dict in RESP3, a flat key/value list in RESP2."""
    if isinstance(reply, dict):
        return {k.decode() if isinstance(k, bytes) else k: v for k, v in reply.items()}
    assert isinstance(reply, list) and len(reply) % 2 == 0, reply
    return {reply[i].decode(): reply[i + 1] for i in range(0, len(reply), 2)}


class Server:
    """One baton process on a free loopback port."""

    def __init__(self, flags, log_path, password=None):
        if not BATON.exists():
            raise AssertionError(f"{BATON} not found: build it with `cargo build --release --bins`")
        self.flags = list(flags)
        # The journal's directory: this server's alone, removed when it stops.
        self.dir = tempfile.mkdtemp(prefix="baton-py-")
        self.password = password
        self.log_path = log_path
        self.host = HOST
        for _attempt in range(5):
            self.port = free_port()
            self.log = open(log_path, "ab")
            self.proc = subprocess.Popen(
                [str(BATON), "--bind", HOST, "--port", str(self.port), "--dir", self.dir, *self.flags],
                stdout=self.log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            if self._ready():
                return
            self.stop()
        raise AssertionError(f"baton did not start; see {log_path}")

    def _ready(self):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False  # e.g. the port was taken meanwhile
            try:
                with socket.create_connection((HOST, self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    data = sock.recv(100)
                    if data.startswith((b"+PONG", b"-NOAUTH")):
                        return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def redis(self, lib=redis, **kwargs):
        """A client of lib (redis-py, or valkey-py) on its own connection."""
        kwargs.setdefault("password", self.password)
        kwargs.setdefault("socket_timeout", 10)
        kwargs.setdefault("socket_connect_timeout", 5)
        return lib.Redis(host=HOST, port=self.port, single_connection_client=True, **kwargs)

    def info(self, section="locks"):
        client = self.redis()
        try:
            return client.info(section)
        finally:
            client.close()

    def lock_info(self, key):
        client = self.redis()
        try:
            return as_dict(client.execute_command("LOCK.INFO", key))
        finally:
            client.close()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def baton(tmp_path):
    """Factory: baton(*flags, password=None) starts a server, stopped after the test."""
    servers = []

    def start(*flags, password=None):
        if password is not None:
            flags = (*flags, "--requirepass", password)
        server = Server(flags, tmp_path / f"baton-{len(servers)}.log", password=password)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(baton):
    return baton()
