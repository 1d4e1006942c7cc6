"""redis-py and its fork valkey-py (sync and asyncio, RESP2 and RESP3) against baton with no
special settings. Every test runs with both: they share one API under two names."""

import asyncio
import importlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import ModuleType

import pytest

from conftest import as_dict, wait_until

PROTOCOLS = [2, 3]


@dataclass(frozen=True)
class PythonClient:
    lib: ModuleType
    lib_name: str  # as CLIENT INFO shows it
    major: int  # the major version scripts/install-test-deps.sh installs

    def connect(self, server, **kwargs):
        return server.redis(lib=self.lib, **kwargs)

    def connect_async(self, server, **kwargs):
        kwargs.setdefault("password", server.password)
        return self.lib.asyncio.Redis(host=server.host, port=server.port, single_connection_client=True, **kwargs)

    def no_retry(self):
        """For the tests that expect an error: redis-py 8 retries ConnectionError (which
        AuthenticationError is) and TimeoutError 10 times with backoff by default; valkey-py 6
        does not retry."""
        return self.lib.retry.Retry(self.lib.backoff.NoBackoff(), 0)

    def no_retry_async(self):
        return self.lib.asyncio.retry.Retry(self.lib.backoff.NoBackoff(), 0)


def python_client(name, lib_name, major):
    for module in ("", ".asyncio", ".asyncio.retry", ".retry", ".backoff", ".exceptions"):
        importlib.import_module(name + module)
    return PythonClient(importlib.import_module(name), lib_name, major)


@pytest.fixture(scope="module", params=["redis-py", "valkey-py"])
def py(request):
    if request.param == "redis-py":
        return python_client("redis", "redis-py", 8)
    return python_client("valkey", "valkey-py", 6)


def test_version(py):
    assert int(py.lib.__version__.split(".")[0]) == py.major, py.lib.__version__


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_lock_replies(py, server, protocol):
    a = py.connect(server, protocol=protocol)
    b = py.connect(server, protocol=protocol)
    key = f"py:replies:{protocol}"

    acquired = a.execute_command("LOCK.TRY", key, "a", "PX", 5000)
    assert acquired[0] == b"ACQUIRED" and isinstance(acquired[1], int) and acquired[1] > 0, acquired
    token = acquired[1]
    assert a.execute_command("LOCK.TRY", key, "a", "PX", 5000) == [b"ACQUIRED", token], "own lock, same token"
    assert b.execute_command("LOCK.TRY", key, "b") == [b"QUEUED", 1]
    assert b.execute_command("LOCK.TRY", key, "c", "NOQUEUE") == [b"BUSY", b"a"]
    assert b.execute_command("LOCK.WAIT", key, "d", 100) is None, "a WAIT that times out is nil"

    info = as_dict(b.execute_command("LOCK.INFO", key))
    assert (info["state"], info["holder"], info["token"]) == (b"held", b"a", token)
    assert info["queue"] == [b"b", b"d"] and info["waiters"] == 2 and info["blocked"] == 0
    assert 0 < info["lease_ms"] <= 5000
    assert info["finisher"] is None and info["result"] is None

    assert a.execute_command("LOCK.EXTEND", key, "a", token, 10_000) == 1
    assert 5000 < as_dict(a.execute_command("LOCK.INFO", key))["lease_ms"] <= 10_000
    with pytest.raises(py.lib.ResponseError, match="^NOTHOLDER"):
        b.execute_command("LOCK.EXTEND", key, "b", token, 100)
    with pytest.raises(py.lib.ResponseError, match="^NOTHOLDER"):
        b.execute_command("LOCK.UNLOCK", key, "a", token + 1, "SUCCESS")
    assert b.execute_command("LOCK.CANCEL", key, "d") == 1
    assert b.execute_command("LOCK.CANCEL", key, "d") == 0

    # SUCCESS: b (queued, not blocked) is told DONE on its next call; KEEP answers late comers.
    assert a.execute_command("LOCK.UNLOCK", key, "a", token, "SUCCESS", "RESULT", "built", "KEEP", 5000) == 1
    assert b.execute_command("LOCK.TRY", key, "b") == [b"DONE", b"a", b"built"]
    assert b.execute_command("LOCK.WAIT", key, "late", 0) == [b"DONE", b"a", b"built"]
    info = as_dict(b.execute_command("LOCK.INFO", key))
    assert (info["state"], info["finisher"], info["result"]) == (b"done", b"a", b"built")
    assert 0 < info["keep_ms"] <= 5000 and info["holder"] is None
    # A retried UNLOCK (its reply was lost) gets the first one's answer; a stranger's is refused.
    assert a.execute_command("LOCK.UNLOCK", key, "a", token, "SUCCESS") == 1
    with pytest.raises(py.lib.ResponseError, match="^NOLOCK"):
        a.execute_command("LOCK.UNLOCK", key, "x", token, "SUCCESS")

    # FAILURE hands the lock to the head of the queue, then frees it.
    key2 = key + ":failure"
    token = a.execute_command("LOCK.TRY", key2, "a")[1]
    assert b.execute_command("LOCK.TRY", key2, "b") == [b"QUEUED", 1]
    assert a.execute_command("LOCK.UNLOCK", key2, "a", token, "FAILURE", "REASON", "disk full") == 1
    granted = b.execute_command("LOCK.TRY", key2, "b")
    assert granted[0] == b"ACQUIRED" and granted[1] > token
    assert as_dict(b.execute_command("LOCK.INFO", key2))["last_failure"] == b"disk full"
    assert b.execute_command("LOCK.UNLOCK", key2, "b", granted[1], "FAILURE") == 0
    assert as_dict(b.execute_command("LOCK.INFO", key2))["state"] == b"free"

    with pytest.raises(py.lib.ResponseError, match="wrong number of arguments for 'lock.try'"):
        a.execute_command("LOCK.TRY", key)
    with pytest.raises(py.lib.ResponseError, match="invalid expire time in 'lock.try'"):
        a.execute_command("LOCK.TRY", key, "a", "PX", 0)
    with pytest.raises(py.lib.ResponseError, match="^timeout is negative"):
        a.execute_command("LOCK.WAIT", key, "a", -1)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_blocking_wait_is_answered_by_another_client(py, server, protocol):
    key = f"py:block:{protocol}"
    holder = py.connect(server, protocol=protocol)
    waiter = py.connect(server, protocol=protocol, socket_timeout=10)  # longer than the wait
    late = py.connect(server, protocol=protocol, socket_timeout=10)
    token = holder.execute_command("LOCK.TRY", key, "holder")[1]
    with ThreadPoolExecutor(2) as pool:
        waiting = pool.submit(waiter.execute_command, "LOCK.WAIT", key, "waiter", 0)
        wait_until(lambda: server.lock_info(key)["blocked"] == 1, message="the WAIT to block")
        time.sleep(0.2)
        assert not waiting.done(), "LOCK.WAIT must block while the lock is held"
        assert holder.execute_command("LOCK.UNLOCK", key, "holder", token, "FAILURE", "REASON", "retry") == 1
        granted = waiting.result(timeout=5)
        assert granted[0] == b"ACQUIRED" and granted[1] > token

        # The new holder succeeds: a blocked WAIT is told DONE at once.
        done = pool.submit(late.execute_command, "LOCK.WAIT", key, "late", 5000)
        wait_until(lambda: server.lock_info(key)["blocked"] == 1, message="the second WAIT to block")
        assert waiter.execute_command("LOCK.UNLOCK", key, "waiter", granted[1], "SUCCESS", "RESULT", "ok") == 1
        assert done.result(timeout=5) == [b"DONE", b"waiter", b"ok"]


def test_client_list_while_a_key_with_separators_is_waited_on(py, server):
    """A blocked key is escaped in CLIENT LIST, so redis-py's parser sees one client per line."""
    key = "py:a b\nid=999 addr=6.6.6.6:1"
    holder = py.connect(server)
    waiter = py.connect(server, socket_timeout=10)
    token = holder.execute_command("LOCK.TRY", key, "holder")[1]
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(waiter.execute_command, "LOCK.WAIT", key, "waiter", 0)
        wait_until(lambda: server.lock_info(key)["blocked"] == 1, message="the WAIT to block")

        # The core counts the waiter first; its connection marks itself blocked a moment later,
        # on its own event loop (a flake on a loaded CI machine when read in between).
        def listed_blocked():
            clients = holder.client_list()
            return clients if any(client.get("flags") == "b" for client in clients) else None

        clients = wait_until(listed_blocked, message="CLIENT LIST to show the WAIT blocked")
        assert all(client["id"] != "999" for client in clients), clients
        blocked = [client for client in clients if client.get("flags") == "b"]
        assert [client["lock"] for client in blocked] == [r"py:a\x20b\x0aid=999\x20addr=6.6.6.6:1"], clients
        assert holder.execute_command("LOCK.UNLOCK", key, "holder", token, "FAILURE") == 1
        assert waiting.result(timeout=5)[0] == b"ACQUIRED"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_timed_wait_within_the_socket_timeout(py, server, protocol):
    key = f"py:timed:{protocol}"
    holder = py.connect(server, protocol=protocol)
    holder.execute_command("LOCK.TRY", key, "holder")
    waiter = py.connect(server, protocol=protocol, socket_timeout=3)
    started = time.monotonic()
    assert waiter.execute_command("LOCK.WAIT", key, "waiter", 1000) is None
    assert 0.9 <= time.monotonic() - started < 2.5
    assert server.lock_info(key)["queue"] == [b"waiter"], "a timed-out waiter keeps its place"


def test_socket_timeout_shorter_than_the_wait_fails_on_the_client(py, server):
    """Why a LOCK.WAIT must end before the read timeout: the client gives up, and with its default
    retry (redis-py 8: 10 retries; valkey-py 6: none) silently drops the connection and sends the
    same WAIT again on a new one, each time starting the wait anew. The server takes the waiter out
    of the queue when the last connection closes."""
    key = "py:short-timeout"
    holder = py.connect(server)
    holder.execute_command("LOCK.TRY", key, "holder")
    retry = py.lib.Redis().get_retry()
    retries = retry.get_retries() if retry else 0
    before = server.info("stats")["total_connections_received"]
    impatient = py.connect(server, socket_timeout=0.1)
    with pytest.raises(py.lib.TimeoutError):
        impatient.execute_command("LOCK.WAIT", key, "impatient", 3000)
    impatient.close()
    # The INFO call above and below each took one connection.
    assert server.info("stats")["total_connections_received"] - before == 1 + retries + 1
    wait_until(lambda: server.lock_info(key)["waiters"] == 0, message="the abandoned waiter to leave")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_handshake_hello_info_client_info(py, server, protocol):
    r = py.connect(server, protocol=protocol)
    assert r.ping() is True
    hello = as_dict(r.execute_command("HELLO", protocol))
    assert hello["proto"] == protocol and hello["server"] == b"redis"
    assert hello["version"].startswith(b"7."), hello
    info = r.info()
    assert info["redis_version"].startswith("7.") and info["loading"] == 0
    assert "lock_grants" in info and "connected_clients" in info
    assert r.info("locks")["lock_keys"] == 0
    client = r.client_info()
    assert client["lib-name"] == py.lib_name and client["lib-ver"] == py.lib.__version__
    assert client["resp"] == str(protocol)
    assert r.client_setname("py-node") is True
    assert r.client_getname() in ("py-node", b"py-node")  # redis-py decodes it in RESP2 only
    assert r.dbsize() == 0
    assert r.echo("hi") == b"hi"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_auth_with_requirepass(py, baton, protocol):
    server = baton(password="s3cret pw")
    good = py.connect(server, protocol=protocol)
    assert good.ping() is True
    assert good.execute_command("LOCK.TRY", "py:auth", "a")[0] == b"ACQUIRED"
    assert py.connect(server, protocol=protocol, username="default").ping() is True
    with pytest.raises(py.lib.AuthenticationError):
        py.connect(server, protocol=protocol, password="wrong", retry=py.no_retry()).ping()
    # RESP2: the command is refused with NOAUTH; RESP3: HELLO 3 without AUTH is, as with Redis.
    with pytest.raises(py.lib.AuthenticationError, match="Authentication required|HELLO must be called"):
        py.connect(server, protocol=protocol, password=None, retry=py.no_retry()).execute_command("LOCK.TRY", "py:auth", "b")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_acl_users_with_redis_py(py, server, protocol):
    admin = py.connect(server, protocol=protocol, decode_responses=True)
    assert admin.acl_whoami() == "default"
    assert admin.acl_setuser("node", enabled=True, passwords=["+node-pw"], keys=["pull:*"],
                             commands=["+@write", "+lock.info", "+acl|whoami", "-@dangerous"], reset=True)
    user = admin.acl_getuser("node")
    assert user["enabled"] is True and "~pull:*" in user["keys"]
    node = py.connect(server, protocol=protocol, username="node", password="node-pw", decode_responses=True)
    assert node.acl_whoami() == "node"
    assert node.execute_command("LOCK.TRY", "pull:py", "a")[0] == "ACQUIRED"
    with pytest.raises(py.lib.exceptions.NoPermissionError):
        node.execute_command("LOCK.TRY", "other:py", "a")
    with pytest.raises(py.lib.exceptions.NoPermissionError):
        node.client_list()
    assert "node" in admin.acl_users()
    assert admin.acl_deluser("node") == 1


def test_pipeline_of_lock_commands(py, server):
    r = py.connect(server)
    pipe = r.pipeline(transaction=False)
    for i in range(20):
        pipe.execute_command("LOCK.TRY", f"py:pipe:{i}", "n1")
    pipe.execute_command("LOCK.TRY", "py:pipe:0", "n2")
    pipe.execute_command("LOCK.INFO", "py:pipe:0")
    replies = pipe.execute()
    assert all(reply[0] == b"ACQUIRED" for reply in replies[:20])
    assert replies[20] == [b"QUEUED", 1]
    assert as_dict(replies[21])["holder"] == b"n1"


def test_lease_runs_out_without_extend(py, server):
    """The lease is real: the recipe tests rely on it to show that EXTEND kept work alive."""
    r = py.connect(server)
    token = r.execute_command("LOCK.TRY", "py:lease", "a", "PX", 200)[1]
    wait_until(lambda: server.lock_info("py:lease")["state"] == b"free", timeout=3, message="the lease to run out")
    with pytest.raises(py.lib.ResponseError, match="^NOLOCK"):
        r.execute_command("LOCK.EXTEND", "py:lease", "a", token, 1000)
    assert server.info()["lock_lease_expiries"] == 1


def test_release_on_disconnect(py, server):
    r = py.connect(server)
    r.execute_command("LOCK.TRY", "py:disconnect", "a")
    r.close()
    wait_until(lambda: server.lock_info("py:disconnect")["state"] == b"free", message="release on disconnect")
    assert server.info()["lock_disconnect_releases"] == 1


# --- asyncio ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_async_lock_replies(py, server, protocol):
    key = f"apy:replies:{protocol}"
    a = py.connect_async(server, protocol=protocol)
    b = py.connect_async(server, protocol=protocol)
    try:
        acquired = await a.execute_command("LOCK.TRY", key, "a")
        assert acquired[0] == b"ACQUIRED" and isinstance(acquired[1], int)
        token = acquired[1]
        assert await b.execute_command("LOCK.TRY", key, "b") == [b"QUEUED", 1]
        assert await b.execute_command("LOCK.TRY", key, "c", "NOQUEUE") == [b"BUSY", b"a"]
        assert await b.execute_command("LOCK.WAIT", key, "d", 50) is None
        assert await a.execute_command("LOCK.EXTEND", key, "a", token, 5000) == 1
        info = as_dict(await b.execute_command("LOCK.INFO", key))
        assert info["holder"] == b"a" and info["queue"] == [b"b", b"d"]
        assert await b.execute_command("LOCK.CANCEL", key, "d") == 1
        assert await a.execute_command("LOCK.UNLOCK", key, "a", token, "SUCCESS", "RESULT", "r", "KEEP", 1000) == 1
        assert await b.execute_command("LOCK.WAIT", key, "b", 0) == [b"DONE", b"a", b"r"]
        with pytest.raises(py.lib.ResponseError, match="^NOLOCK"):
            await a.execute_command("LOCK.EXTEND", key, "a", token, 5000)
        assert (await a.info())["loading"] == 0
        assert (await a.client_info())["resp"] == str(protocol)
    finally:
        await a.aclose()
        await b.aclose()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_async_blocking_wait(py, server, protocol):
    key = f"apy:block:{protocol}"
    holder = py.connect_async(server, protocol=protocol)
    waiters = [py.connect_async(server, protocol=protocol, socket_timeout=10) for _ in range(3)]
    try:
        token = (await holder.execute_command("LOCK.TRY", key, "holder"))[1]
        tasks = [
            asyncio.create_task(w.execute_command("LOCK.WAIT", key, f"w{i}", 0)) for i, w in enumerate(waiters)
        ]
        for _ in range(500):
            if as_dict(await holder.execute_command("LOCK.INFO", key))["blocked"] == 3:
                break
            await asyncio.sleep(0.01)
        assert not any(task.done() for task in tasks)
        # FAILURE: the head of the queue gets it; the others keep waiting.
        assert await holder.execute_command("LOCK.UNLOCK", key, "holder", token, "FAILURE") == 1
        done, pending = await asyncio.wait(tasks, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        assert len(done) == 1 and len(pending) == 2
        winner = done.pop()
        granted = winner.result()
        assert granted[0] == b"ACQUIRED"
        index = tasks.index(winner)
        # SUCCESS: everybody still waiting is told DONE.
        told = await waiters[index].execute_command(
            "LOCK.UNLOCK", key, f"w{index}", granted[1], "SUCCESS", "RESULT", "image"
        )
        assert told == 2
        results = await asyncio.wait_for(asyncio.gather(*pending), timeout=5)
        assert results == [[b"DONE", f"w{index}".encode(), b"image"]] * 2
    finally:
        await holder.aclose()
        for w in waiters:
            await w.aclose()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_async_auth(py, baton, protocol):
    server = baton(password="s3cret")
    good = py.connect_async(server, protocol=protocol)
    bad = py.connect_async(server, protocol=protocol, password="nope", retry=py.no_retry_async())
    try:
        assert await good.ping() is True
        with pytest.raises(py.lib.AuthenticationError):
            await bad.ping()
    finally:
        await good.aclose()
        await bad.aclose()


def test_threads_share_a_pool(py, server):
    """The default (pooled) client from many threads: every node gets an answer, exactly one runs."""
    r = py.lib.Redis(host=server.host, port=server.port, socket_timeout=10)
    key = "py:threads"
    ran = []
    lock = threading.Lock()

    def node(name):
        reply = r.execute_command("LOCK.WAIT", key, name, 5000)
        if reply[0] == b"ACQUIRED":
            with lock:
                ran.append(name)
            time.sleep(0.2)
            r.execute_command("LOCK.UNLOCK", key, name, reply[1], "SUCCESS", "RESULT", name, "KEEP", 5000)
            return "ran"
        return reply[0].decode()

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(node, [f"t{i}" for i in range(8)]))
    assert len(ran) == 1 and outcomes.count("ran") == 1 and outcomes.count("DONE") == 7, outcomes
    r.close()
