"""redis-benchmark driving LOCK.TRY on random keys: no errors, a positive rate."""

import csv
import io
import subprocess

import pytest

from conftest import HOST


def benchmark(server, *args, timeout=90):
    proc = subprocess.run(
        ["redis-benchmark", "-h", HOST, "-p", str(server.port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc, proc.stdout + proc.stderr


@pytest.mark.parametrize("protocol", ["2", "3"])
def test_redis_benchmark_lock_try(server, protocol):
    extra = ["-3"] if protocol == "3" else []
    proc, output = benchmark(
        server, *extra, "-n", "20000", "-c", "20", "-r", "100000", "--csv", "LOCK.TRY", "key:__rand_int__", "owner"
    )
    assert proc.returncode == 0, output
    for bad in ("Error", "ERR", "WARNING", "NOAUTH"):
        assert bad not in output, output
    rows = list(csv.reader(io.StringIO(proc.stdout)))
    assert rows[0][:2] == ["test", "rps"], output
    assert rows[1][0] == "LOCK.TRY key:__rand_int__ owner", output
    assert float(rows[1][1]) > 0, output
    assert server.info()["lock_grants"] > 0


def test_redis_benchmark_with_pipelining_and_auth(baton):
    server = baton(password="bench")
    proc, output = benchmark(
        server, "-a", "bench", "-n", "20000", "-c", "10", "-P", "16", "-r", "1000", "-q",
        "LOCK.TRY", "key:__rand_int__", "owner:__rand_int__",
    )
    assert proc.returncode == 0, output
    assert "Error" not in output and "ERR" not in output, output
    last = output.replace("\r", "\n").strip().split("\n")[-1]
    assert last.startswith("LOCK.TRY key:__rand_int__ owner:__rand_int__: ") and "requests per second" in last, output
    assert float(last.split(": ")[1].split()[0]) > 0


def test_the_error_check_catches_errors(server):
    """The checks above would see a failing command: redis-benchmark prints the server's error."""
    _proc, output = benchmark(server, "-n", "100", "-c", "2", "--csv", "LOCK.TRY", "only-a-key")
    assert "Error from server: ERR wrong number of arguments for 'lock.try' command" in output, output
