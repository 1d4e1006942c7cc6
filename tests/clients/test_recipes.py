"""The examples/ recipes, run as several concurrent nodes against a live server.

Each recipe runs a shell command as its work; the work appends the node id to a shared file only
when it actually runs, so the file shows how many times the work was done and by whom. The recipes
use their client library's default settings (timeouts, retries); the tests run them with their own
defaults too, except where a test says otherwise.

The Rust recipe is target/release/examples/once ($BATON_ONCE_BIN), built by
`cargo build --release --example once`; the Node one needs tests/clients/node/node_modules; the Go
one is built here with Debian's Go toolchain and redigo (golang-go, golang-github-gomodule-redigo-dev,
in GOPATH mode: the module proxy is not used).
"""

import os
import shutil
from dataclasses import dataclass
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from conftest import HOST, ROOT, free_port, wait_until

EXAMPLES = ROOT / "examples"
NODE_MODULES = ROOT / "tests" / "clients" / "node" / "node_modules"
ONCE_RS = Path(os.environ.get("BATON_ONCE_BIN", ROOT / "target" / "release" / "examples" / "once"))
# Where Debian's golang-github-gomodule-redigo-dev puts redigo's source.
DEBIAN_GOPATH = "/usr/share/gocode"

# The default read (response) timeout of each recipe's client, in seconds, which one LOCK.WAIT must
# not outlast: redis-cli has none, redis-py's is read from the installed version, redis-rs's async
# connections have 500 ms, ioredis and redigo have none.
READ_TIMEOUTS = {
    "shell": None,
    "python": redis.Redis().get_connection_kwargs()["socket_timeout"],
    "rust": 0.5,
    "node": None,
    "go": None,
}


@dataclass
class Recipe:
    name: str
    argv: list
    read_timeout: float | None


@pytest.fixture(scope="session")
def go_recipe(tmp_path_factory):
    """examples/once.go, built once per session."""
    if shutil.which("go") is None:
        pytest.fail("go is not installed: run scripts/install-test-deps.sh")
    binary = tmp_path_factory.mktemp("go") / "once"
    env = dict(os.environ, GO111MODULE="off", GOPATH=DEBIAN_GOPATH, GOFLAGS="", GOPROXY="off")
    built = subprocess.run(
        ["go", "build", "-o", str(binary), str(EXAMPLES / "once.go")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert built.returncode == 0, f"go build failed:\n{built.stderr}"
    return [str(binary)]


@pytest.fixture(params=list(READ_TIMEOUTS))
def recipe(request):
    name = request.param
    if name == "shell":
        argv = ["bash", str(EXAMPLES / "once.sh")]
    elif name == "python":
        argv = [sys.executable, str(EXAMPLES / "once.py")]
    elif name == "rust":
        if not ONCE_RS.exists():
            pytest.fail(f"{ONCE_RS} not found: run `cargo build --release --example once`")
        argv = [str(ONCE_RS)]
    elif name == "node":
        if not (NODE_MODULES / "ioredis").exists():
            pytest.fail(f"ioredis is not installed in {NODE_MODULES}: run scripts/install-test-deps.sh")
        argv = ["node", str(EXAMPLES / "once.cjs")]
    else:
        argv = request.getfixturevalue("go_recipe")
    return Recipe(name, argv, READ_TIMEOUTS[name])


class Node:
    """One running copy of a recipe."""

    def __init__(self, recipe, server, key, node, work, workdir, *options):
        self.name = node
        self.out_path = workdir / f"{node}.out"
        self.err_path = workdir / f"{node}.err"
        env = dict(os.environ, NODE_PATH=str(NODE_MODULES))
        env.pop("BATON_PASSWORD", None)
        argv = [*recipe.argv, "--host", HOST, "--port", str(server.port), "--key", key, "--node", node]
        if server.password:
            argv += ["--password", server.password]
        argv += [*options, "--", "sh", "-c", work]
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(
                argv, cwd=workdir, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True
            )

    def output(self):
        return self.out_path.read_text()

    def lines(self):
        return self.output().splitlines()

    def last(self):
        lines = self.lines()
        return lines[-1] if lines else ""

    def wait(self, timeout=30):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} did not finish in {timeout}s:\n{self.describe()}")

    def kill(self, sig=signal.SIGKILL):
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def describe(self):
        return f"--- {self.name} stdout:\n{self.output()}--- {self.name} stderr:\n{self.err_path.read_text()}"


@pytest.fixture
def nodes():
    started = []
    yield started
    for node in started:
        node.kill()  # whatever is left of a node (e.g. an orphaned work process)


def run_together(started, recipe, server, key, workdir, work, names, *options):
    batch = [Node(recipe, server, key, name, work, workdir, *options) for name in names]
    started.extend(batch)
    codes = {node.name: node.wait() for node in batch}
    return batch, codes


def describe(batch):
    return "\n".join(node.describe() for node in batch)


def read_lines(path):
    return path.read_text().split() if path.exists() else []


def assert_ran_once(batch, codes, workdir, product):
    """Every node exited 0 and the work ran once: its node reports SUCCESS with
    "<product>-by-<node>", the others DONE with that. Returns the node that did the work."""
    did = read_lines(workdir / "did")
    assert len(did) == 1, f"the work ran {len(did)} times: {did}\n{describe(batch)}"
    winner = did[0]
    for node in batch:
        assert codes[node.name] == 0, describe(batch)
        outcome = "SUCCESS" if node.name == winner else f"DONE finisher={winner}"
        assert node.last() == f"{node.name}: {outcome} result={product}-by-{winner}", node.describe()
    return winner


def test_work_runs_exactly_once(recipe, baton, nodes, tmp_path):
    server = baton()
    work = 'echo "$BATON_NODE" >> did; sleep 0.5; echo "image-built-by-$BATON_NODE"'
    batch, codes = run_together(nodes, recipe, server, "job:once", tmp_path, work, [f"n{i}" for i in range(1, 6)])
    winner = assert_ran_once(batch, codes, tmp_path, "image-built")
    for node in batch:
        assert node.lines()[0] == f"{node.name}: WAITING key=job:once", node.describe()
        assert (f"{node.name}: ACQUIRED token=" in node.output()) == (node.name == winner), node.describe()
    # A node arriving later is told DONE too (the recipes unlock with KEEP).
    late, codes = run_together(nodes, recipe, server, "job:once", tmp_path, work, ["late"])
    assert codes["late"] == 0 and late[0].last() == f"late: DONE finisher={winner} result=image-built-by-{winner}"
    assert read_lines(tmp_path / "did") == [winner]
    stats = server.info()
    assert (stats["lock_grants"], stats["lock_successes"], stats["lock_failures"]) == (1, 1, 0), stats


def test_failed_work_is_retried_by_the_next_node(recipe, baton, nodes, tmp_path):
    server = baton(password="recipe secret")
    work = (
        'echo "$BATON_NODE" >> attempts; '
        'if mkdir first-attempt 2>/dev/null; then sleep 0.3; echo "simulated failure" >&2; exit 7; fi; '
        'sleep 0.3; echo "$BATON_NODE" >> did; echo "fixed-by-$BATON_NODE"'
    )
    batch, codes = run_together(nodes, recipe, server, "job:retry", tmp_path, work, [f"n{i}" for i in range(1, 6)])
    attempts = read_lines(tmp_path / "attempts")
    assert len(attempts) == 2 and attempts[0] != attempts[1], f"attempts {attempts}\n{describe(batch)}"
    failed, fixer = attempts
    assert read_lines(tmp_path / "did") == [fixer]
    for node in batch:
        if node.name == failed:
            assert codes[node.name] == 1, node.describe()
            assert node.last() == f"{failed}: FAILURE reason=exit status 7", node.describe()
        elif node.name == fixer:
            assert codes[node.name] == 0, node.describe()
            assert node.last() == f"{fixer}: SUCCESS result=fixed-by-{fixer}", node.describe()
        else:
            assert codes[node.name] == 0, node.describe()
            assert node.last() == f"{node.name}: DONE finisher={fixer} result=fixed-by-{fixer}", node.describe()
    stats = server.info()
    assert (stats["lock_failures"], stats["lock_handoffs"], stats["lock_successes"]) == (1, 1, 1), stats


def test_long_work_is_kept_alive_by_extend(recipe, baton, nodes, tmp_path):
    """The work (3 s) outlives the lease (900 ms) several times over; EXTEND keeps the lock, and
    the waiters' WAITs (300 ms) time out and are asked again without losing their place."""
    server = baton()
    work = 'echo "$BATON_NODE" >> did; sleep 3; echo "long-job-by-$BATON_NODE"'
    options = ["--lease-ms", "900", "--wait-ms", "300"]
    batch, codes = run_together(nodes, recipe, server, "job:long", tmp_path, work, ["n1", "n2", "n3"], *options)
    winner = assert_ran_once(batch, codes, tmp_path, "long-job")
    for node in batch:
        if node.name == winner:
            extends = [line for line in node.lines() if line.startswith(f"{winner}: EXTENDED token=")]
            assert len(extends) >= 5, node.describe()
        else:
            assert f"{node.name}: STILL WAITING" in node.lines(), node.describe()
    stats = server.info()
    assert stats["lock_lease_expiries"] == 0, stats
    assert (stats["lock_grants"], stats["lock_handoffs"], stats["lock_successes"]) == (1, 0, 1), stats


def test_wait_outlasts_the_client_read_timeout(recipe, baton, nodes, tmp_path):
    """With the recipe's defaults and its client's, the others wait longer than the client's read
    timeout (1.5 s more): their WAITs end on the server before the client gives up, are sent again
    on the same connection, and every node ends as it should, with no reconnect."""
    server = baton()
    seconds = (recipe.read_timeout or 0) + 1.5
    work = f'echo "$BATON_NODE" >> did; sleep {seconds}; echo "slow-job-by-$BATON_NODE"'
    connections_before = server.info("stats")["total_connections_received"]
    batch, codes = run_together(nodes, recipe, server, "job:slow", tmp_path, work, ["n1", "n2", "n3"])
    winner = assert_ran_once(batch, codes, tmp_path, "slow-job")
    if recipe.read_timeout is not None:
        for node in batch:
            assert (f"{node.name}: STILL WAITING" in node.lines()) == (node.name != winner), node.describe()
    stats = server.info("all")
    assert (stats["lock_grants"], stats["lock_successes"], stats["lock_failures"]) == (1, 1, 0), stats
    assert stats["lock_disconnect_releases"] == 0, stats
    # One connection per node, and this INFO's.
    assert stats["total_connections_received"] - connections_before == len(batch) + 1, stats


def test_crashed_holder_is_replaced(recipe, baton, nodes, tmp_path):
    """The holder's process dies (SIGKILL) mid-work: its connection closes, baton releases the
    lock as FAILURE, and the next node does the work."""
    server = baton()
    work = (
        'if mkdir first-attempt 2>/dev/null; then echo "$BATON_NODE" >> attempts; sleep 60; fi; '
        'echo "$BATON_NODE" >> did; echo "recovered-by-$BATON_NODE"'
    )
    first = Node(recipe, server, "job:crash", "n1", work, tmp_path)
    nodes.append(first)
    wait_until(lambda: (tmp_path / "attempts").exists(), timeout=15, message=f"n1 to start work\n{first.describe()}")
    others = [Node(recipe, server, "job:crash", f"n{i}", work, tmp_path) for i in range(2, 5)]
    nodes.extend(others)
    wait_until(lambda: server.lock_info("job:crash")["blocked"] == 3, timeout=15, message="the others to queue")
    os.kill(first.proc.pid, signal.SIGKILL)  # the recipe process only; its helpers must not keep the lock
    first.proc.wait(timeout=5)
    codes = {node.name: node.wait() for node in others}
    did = read_lines(tmp_path / "did")
    assert len(did) == 1 and did[0] != "n1", f"did {did}\n{describe([first, *others])}"
    fixer = did[0]
    for node in others:
        assert codes[node.name] == 0, node.describe()
        if node.name == fixer:
            assert node.last() == f"{fixer}: SUCCESS result=recovered-by-{fixer}", node.describe()
        else:
            assert node.last() == f"{node.name}: DONE finisher={fixer} result=recovered-by-{fixer}", node.describe()
    stats = server.info()
    assert stats["lock_disconnect_releases"] == 1 and stats["lock_successes"] == 1, stats


class Nowhere:
    """A port nothing listens on."""

    password = None

    def __init__(self):
        self.port = free_port()


def test_unreachable_server_is_an_error(recipe, tmp_path):
    node = Node(recipe, Nowhere(), "job:none", "n1", "echo never >> did", tmp_path)
    assert node.wait(timeout=20) == 2, node.describe()
    assert "n1: ERROR" in node.err_path.read_text(), node.describe()
    assert not (tmp_path / "did").exists()


def test_usage_error(recipe, tmp_path):
    env = dict(os.environ, NODE_PATH=str(NODE_MODULES))
    proc = subprocess.run(
        [*recipe.argv, "--port", "1", "--node", "n1"], capture_output=True, text=True, timeout=20, env=env
    )
    assert proc.returncode == 2, proc
