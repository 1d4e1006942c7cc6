"""redis-py's RedisCluster against a three-node baton cluster, through leader kills.

The cluster runs the real binary, one process per node with a --dir of its own, on free loopback
ports. The tests find the leader as a client does (CLUSTER NODES: its `master` line), SIGKILL it
and restart it later on its dir.

The client settings a user of RedisCluster needs (docs/cluster.md, *Clients*):
- every node as a startup node, so the client can still ask someone for the slot map when the
  node it knew best is dead;
- `retry=Retry(..., retries)`: RedisCluster retries a command on ConnectionError, TimeoutError and
  CLUSTERDOWN, refreshing the slot map each time, but without pausing between attempts (redis-py 8
  uses the Retry object only for its count; only CLUSTERDOWN sleeps 0.25 s), so its retries can
  run out before an election ends (1-2 s). The application then retries the call itself, by owner:
  a LOCK.WAIT or LOCK.TRY re-sent by the same owner re-attaches to its lock (same token, lease
  restarted) or its place, a re-sent LOCK.UNLOCK gets the first one's answer, a re-sent EXTEND
  extends again or answers NOTHOLDER/NOLOCK;
- a socket_timeout above each LOCK.WAIT slice, and a short socket_connect_timeout.
"""

import random
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field

import pytest
import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import ClusterError, RedisClusterException
from redis.retry import Retry

from conftest import BATON, HOST, as_dict, wait_until

# Failover takes 1-2 s; a loaded machine gets many times that.
PATIENCE = 30
WAIT_SLICE_MS = 1000
LEASE_MS = 3000
# The errors a failover shows a RedisCluster caller once the client's own retries are spent.
FAILOVER_ERRORS = (redis.ConnectionError, redis.TimeoutError, ClusterError, RedisClusterException)


def unused_ports(count):
    """Cluster nodes need their ports named in advance. They come from below Linux's ephemeral
    range (32768 and up), so no server that another test starts on port 0 meanwhile takes one
    between this choice and the node's bind (a node whose port is taken exits at once)."""
    ports = []
    while len(ports) < count:
        port = random.randrange(20_000, 32_000)
        with socket.socket() as probe:
            try:
                probe.bind((HOST, port))
            except OSError:
                continue
        if port not in ports:
            ports.append(port)
    return ports


class ClusterProcesses:
    """Three baton nodes on loopback, each with its own --dir under the test's tmp_path."""

    def __init__(self, tmp_path, size=3):
        self.tmp_path = tmp_path
        self.ports = {}
        peers = []
        ports = unused_ports(2 * size)
        for node in range(1, size + 1):
            client, bus = ports[2 * node - 2], ports[2 * node - 1]
            self.ports[node] = client
            peers.append(f"{node}@{HOST}:{client}@{bus}")
        self.peers = ",".join(peers)
        self.procs = {}
        for node in self.ports:
            self.start(node)

    def start(self, node):
        assert node not in self.procs, f"node {node} runs already"
        log = open(self.tmp_path / f"n{node}.log", "ab")
        argv = [str(BATON), "--bind", HOST, "--port", str(self.ports[node]), "--dir", str(self.tmp_path / f"n{node}"),
                "--cluster-node-id", str(node), "--cluster-peers", self.peers]
        self.procs[node] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()

    def kill(self, node):
        proc = self.procs.pop(node)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self):
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self.procs.clear()

    def startup_nodes(self):
        return [ClusterNode(HOST, port) for port in self.ports.values()]

    def _ask(self, node, *command):
        plain = redis.Redis(host=HOST, port=self.ports[node], socket_timeout=2, socket_connect_timeout=1)
        try:
            return plain.execute_command(*command)
        except redis.RedisError:
            return None
        finally:
            plain.close()

    def _serving_leader(self):
        for node in self.procs:
            nodes = self._ask(node, "CLUSTER", "NODES")
            if not nodes:
                continue
            text = nodes.decode() if isinstance(nodes, bytes) else nodes
            for line in text.splitlines():
                fields = line.split()
                if "master" in fields[2].split(","):
                    port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
                    leader = next((n for n, p in self.ports.items() if p == port and n in self.procs), None)
                    # Elected is not yet serving: the new leader loads the committed state first.
                    if leader is not None and self._ask(leader, "LOCK.INFO", "leader-probe") is not None:
                        return leader
        return None

    def leader(self):
        """The running node that CLUSTER NODES names master and that serves key commands."""
        return wait_until(self._serving_leader, timeout=PATIENCE, interval=0.05, message="a serving leader")

    def logs(self):
        return "".join(f"\n--- n{node}.log:\n{(self.tmp_path / f'n{node}.log').read_text()}" for node in self.ports)


@pytest.fixture
def cluster(tmp_path):
    if not BATON.exists():
        raise AssertionError(f"{BATON} not found: build it with `cargo build --release --bins`")
    processes = ClusterProcesses(tmp_path)
    try:
        processes.leader()
        yield processes
    finally:
        processes.stop()


def cluster_client(startup_nodes, **kwargs):
    """A RedisCluster with the settings docs/cluster.md recommends for failover."""
    return RedisCluster(
        startup_nodes=startup_nodes,
        retry=Retry(ExponentialWithJitterBackoff(base=0.1, cap=1), retries=10),
        socket_timeout=WAIT_SLICE_MS / 1000 + 4,
        socket_connect_timeout=1,
        **kwargs,
    )


def by_owner(call, deadline):
    """Runs call() until it gets through a failover; returns (monotonic time of the last send, reply).

    Safe for every lock command sent by its owner (see the module's docstring)."""
    while True:
        sent = time.monotonic()
        try:
            return sent, call()
        except FAILOVER_ERRORS:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def text(value):
    return value.decode() if isinstance(value, bytes) else value


@pytest.mark.parametrize("protocol", [2, 3])
def test_a_client_seeded_with_a_follower_follows_moved(cluster, protocol):
    leader = cluster.leader()
    follower = next(node for node in cluster.ports if node != leader)
    client = cluster_client([ClusterNode(HOST, cluster.ports[follower])], protocol=protocol)
    try:
        kind, token = client.execute_command("LOCK.TRY", "py:basic", "owner-a", "PX", 60_000)
        assert text(kind) == "ACQUIRED" and token > 0
        info = as_dict(client.execute_command("LOCK.INFO", "py:basic"))
        assert (text(info["state"]), text(info["holder"]), info["token"]) == ("held", "owner-a", token)
        assert client.execute_command("LOCK.UNLOCK", "py:basic", "owner-a", token, "SUCCESS",
                                      "RESULT", "built", "KEEP", 60_000) == 0  # waiters told
        assert [text(v) for v in client.execute_command("LOCK.TRY", "py:basic", "owner-b")] == ["DONE", "owner-a", "built"]
        # The client learnt the leader from the follower's MOVED (or its slot map) and sends there.
        assert client.get_node_from_key("py:basic").port == cluster.ports[leader]
    finally:
        client.close()


@dataclass
class Attempt:
    """One holding of a key by one worker: from ACQUIRED to the end of its last step of work."""

    owner: str
    token: int
    start: float
    end: float = 0.0
    completed: bool = False


@dataclass
class KeyLog:
    attempts: list = field(default_factory=list)
    # When a SUCCESS unlock was first acknowledged: no work may start on the key after it.
    success_at: float | None = None
    outcomes: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def do_once(client, key, owner, log, steps, deadline):
    """examples/once.py's protocol with RedisCluster: WAIT in slices, work with EXTEND every lease/3,
    UNLOCK SUCCESS with KEEP. A holder stops working when its lease may have run out (its last
    successful EXTEND or grant was sent more than a lease ago), and asks again by owner."""
    step = 0.1
    while True:
        sent, reply = by_owner(lambda: client.execute_command("LOCK.WAIT", key, owner, WAIT_SLICE_MS, "PX", LEASE_MS),
                               deadline)
        if reply is None:
            continue
        if text(reply[0]) == "DONE":
            return ("DONE", text(reply[1]), text(reply[2]))
        assert text(reply[0]) == "ACQUIRED", reply
        token = int(reply[1])
        # The server's lease started no earlier than this WAIT was sent (a re-attach restarts it).
        valid_until = sent + LEASE_MS / 1000
        attempt = Attempt(owner, token, time.monotonic())
        with log.lock:
            log.attempts.append(attempt)
        next_extend = sent + LEASE_MS / 3000
        done_steps = 0
        lost = False
        while done_steps < steps:
            if time.monotonic() >= next_extend:
                try:
                    sent, _ = by_owner(lambda: client.execute_command("LOCK.EXTEND", key, owner, token, LEASE_MS),
                                       deadline)
                except redis.ResponseError:  # NOTHOLDER / NOLOCK: the lease ran out
                    lost = True
                    break
                valid_until = sent + LEASE_MS / 1000
                next_extend = sent + LEASE_MS / 3000
            if time.monotonic() + step >= valid_until:
                lost = True  # a failover outlasted the lease: this holder may no longer hold
                break
            time.sleep(step)
            done_steps += 1
            attempt.end = time.monotonic()
        if lost:
            continue  # ask again by owner: re-attaches if still the holder, else queues
        attempt.completed = True
        try:
            by_owner(lambda: client.execute_command("LOCK.UNLOCK", key, owner, token, "SUCCESS",
                                                    "RESULT", f"built-by-{owner}", "KEEP", 600_000), deadline)
        except redis.ResponseError:
            attempt.completed = False  # the lock was lost meanwhile; someone else redoes the work
            continue
        with log.lock:
            if log.success_at is None:
                log.success_at = time.monotonic()
        return ("SUCCESS", owner, f"built-by-{owner}")


def run_round(cluster, keys, workers, kill_when_working):
    """Workers do every key once, in rotated orders; the leader is SIGKILLed once work is under way.
    Returns (logs per key, the killed node)."""
    logs = {key: KeyLog() for key in keys}
    errors = []
    deadline = time.monotonic() + 4 * PATIENCE

    def worker(index):
        owner = f"w{index}"
        client = cluster_client(cluster.startup_nodes())
        try:
            for key in keys[index % len(keys):] + keys[:index % len(keys)]:
                logs[key].outcomes[owner] = do_once(client, key, owner, logs[key], steps=10, deadline=deadline)
        except Exception as err:  # reported by the test
            errors.append(f"{owner}: {err!r}")
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    killed = None
    if kill_when_working:
        wait_until(lambda: sum(bool(log.attempts) for log in logs.values()) >= min(2, len(keys)), timeout=PATIENCE,
                   message="work under way")
        killed = cluster.leader()
        cluster.kill(killed)
    for thread in threads:
        thread.join(timeout=5 * PATIENCE)
        assert not thread.is_alive(), "a worker did not finish"
    assert not errors, f"{errors}{cluster.logs()}"
    return logs, killed


def assert_done_once(cluster, logs, workers):
    for key, log in logs.items():
        attempts = sorted(log.attempts, key=lambda a: a.start)
        # Never two holders at once: each holding's work ends before the next one starts.
        for earlier, later in zip(attempts, attempts[1:]):
            assert earlier.end <= later.start, f"{key}: overlapping work {earlier} {later}"
            assert later.token >= earlier.token, f"{key}: tokens went back {earlier} {later}"
        # No work started after a success was acknowledged.
        assert all(a.start < log.success_at for a in attempts), f"{key}: {attempts} after {log.success_at}"
        completed = [a for a in attempts if a.completed]
        assert completed, f"{key}: nobody completed the work: {attempts}"
        # Every worker ended with the one result the server kept.
        finishers = {outcome[1] for outcome in log.outcomes.values()}
        assert len(log.outcomes) == workers and len(finishers) == 1, f"{key}: {log.outcomes}"
        (finisher,) = finishers
        assert finisher in {a.owner for a in completed}, f"{key}: {finisher} did not complete the work"
        plain = redis.Redis(host=HOST, port=cluster.ports[cluster.leader()])
        try:
            info = as_dict(plain.execute_command("LOCK.INFO", key))
        finally:
            plain.close()
        assert (text(info["state"]), text(info["finisher"])) == ("done", finisher), info


def test_once_recipe_through_leader_kills(cluster):
    workers = 4
    # Round 1: the leader dies while keys are being worked on.
    logs, killed = run_round(cluster, ["py:once:a", "py:once:b", "py:once:c"], workers, kill_when_working=True)
    assert_done_once(cluster, logs, workers)
    # The killed node rejoins on its dir; then the next leader dies mid-work too.
    cluster.start(killed)
    logs, _ = run_round(cluster, ["py:once:d", "py:once:e"], workers, kill_when_working=True)
    assert_done_once(cluster, logs, workers)
