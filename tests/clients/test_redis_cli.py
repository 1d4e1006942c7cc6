"""redis-cli against baton: one-shot commands, --pipe, scripts on stdin, the tools that browse a
server (--scan, --bigkeys, --memkeys, --stat), and the interactive mode in a pseudo-terminal
(tmux): argument hints from COMMAND DOCS and a blocking LOCK.WAIT.

Set BATON_HINTS_CAPTURE=path to save the screen of the interactive session there.
"""

import os
import re
import shutil
import subprocess
import time

import pytest

from conftest import HOST, wait_until


def cli(server, *args, stdin=None, timeout=20):
    proc = subprocess.run(
        ["redis-cli", "-h", HOST, "-p", str(server.port), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc


def test_redis_cli_version():
    out = subprocess.run(["redis-cli", "--version"], capture_output=True, text=True, check=True).stdout
    assert re.match(r"redis-cli [6-9]\.", out), out


def test_one_shot_commands(server):
    out = cli(server, "LOCK.TRY", "cli:one", "a").stdout.split("\n")
    assert out[0] == "ACQUIRED" and out[1].isdigit(), out
    # Each one-shot call is its own connection: it closed, so the lock was released as FAILURE.
    wait_until(lambda: cli(server, "LOCK.INFO", "cli:one").stdout.split("\n")[1] == "free")
    assert cli(server, "PING").stdout == "PONG\n"
    nolock = cli(server, "LOCK.UNLOCK", "cli:one", "a", "1", "SUCCESS").stdout
    assert nolock.startswith("NOLOCK the lock is not held"), nolock
    assert "wrong number of arguments for 'lock.extend'" in cli(server, "LOCK.EXTEND", "k", "o").stdout
    # Formatted (tty-style) and RESP3 output.
    formatted = cli(server, "--no-raw", "LOCK.WAIT", "cli:two", "b", "100").stdout
    assert re.match(r'1\) "ACQUIRED"\n2\) \(integer\) \d+\n$', formatted), formatted
    resp3 = cli(server, "-3", "--no-raw", "LOCK.INFO", "cli:none").stdout
    assert '1# "state" => "free"' in resp3 and '"holder" => (nil)' in resp3, resp3
    assert cli(server, "--no-raw", "-3", "HELLO", "3").stdout.startswith('1# "server" => "redis"')


def test_one_shot_commands_without_release_on_disconnect(baton):
    """With --release-on-disconnect no, one-shot calls can hold a lock across calls (lease only)."""
    server = baton("--release-on-disconnect", "no")
    token = cli(server, "LOCK.TRY", "cli:lease", "a", "PX", "5000").stdout.split("\n")[1]
    assert cli(server, "LOCK.TRY", "cli:lease", "b").stdout == "QUEUED\n1\n"
    assert cli(server, "LOCK.EXTEND", "cli:lease", "a", token, "5000").stdout == "1\n"
    assert cli(server, "LOCK.UNLOCK", "cli:lease", "a", token, "SUCCESS", "RESULT", "r", "KEEP", "5000").stdout == "1\n"
    assert cli(server, "LOCK.TRY", "cli:lease", "b").stdout == "DONE\na\nr\n"


def resp(*args):
    return f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)


def test_pipe_mode(server):
    commands = [resp("LOCK.TRY", f"cli:pipe:{i}", "n1", "PX", "60000") for i in range(2000)]
    commands += [resp("LOCK.TRY", "cli:pipe:0", "n2"), resp("LOCK.INFO", "cli:pipe:1"), resp("PING")]
    proc = cli(server, "--pipe", stdin="".join(commands), timeout=60)
    assert proc.returncode == 0, proc
    assert "errors: 0, replies: 2003" in proc.stdout, proc.stdout
    # A bad command in the stream is counted as an error (the check above can fail).
    bad = cli(server, "--pipe", stdin=resp("LOCK.TRY", "only-a-key") + resp("PING"))
    assert bad.returncode != 0 and "errors: 1, replies: 2" in bad.stdout, bad


def test_script_on_stdin_runs_on_one_connection(server):
    script = "\n".join(
        [
            "LOCK.TRY cli:script s1 PX 5000",
            "LOCK.TRY cli:script s2",
            "LOCK.INFO cli:script",
            'LOCK.CANCEL cli:script "s2"',
            "LOCK.EXTEND cli:script s1 1 100",
            "PING",
        ]
    )
    out = cli(server, "--csv", stdin=script + "\n").stdout.splitlines()
    assert re.fullmatch(r'"ACQUIRED",\d+', out[0]), out
    token = out[0].split(",")[1]
    assert out[1] == '"QUEUED",1'
    assert out[2].startswith(f'"state","held","holder","s1","token",{token},'), out[2]
    assert out[3] == "1"
    assert out[4].startswith('ERROR,"NOTHOLDER'), out[4]
    assert out[5] == '"PONG"'


# --- the tools that browse a server ---------------------------------------------------------------


@pytest.fixture
def browsed(server):
    """A server holding 120 `pull:` and 30 `push:` locks (on a connection kept open, so they stay),
    `pull:busy` with a line of 40 waiters."""
    holder = server.redis()
    pipe = holder.pipeline(transaction=False)
    for key in [f"pull:{i}" for i in range(120)] + [f"push:{i}" for i in range(30)]:
        pipe.execute_command("LOCK.TRY", key, "holder", "PX", 600000)
    for i in range(40):
        pipe.execute_command("LOCK.TRY", "pull:busy", f"waiter-{i:02}", "PX", 600000)
    pipe.execute_command("LOCK.TRY", "pull:busy", "holder", "PX", 600000)
    pipe.execute()
    yield server
    holder.close()


def test_scan_mode(browsed):
    pulls = cli(browsed, "--scan", "--pattern", "pull:*").stdout.split()
    assert sorted(pulls) == sorted([f"pull:{i}" for i in range(120)] + ["pull:busy"])
    everything = cli(browsed, "--scan").stdout.split()
    assert len(everything) == 151 and len(set(everything)) == 151
    assert cli(browsed, "--scan", "--pattern", "nothing:*").stdout == ""


def test_bigkeys(browsed):
    out = cli(browsed, "--bigkeys").stdout
    assert "Sampled 151 keys in the keyspace!" in out, out
    # No size command exists for a lock, so redis-cli counts them without sizes, as module types.
    assert re.search(r"^151 locks with 0 \? \(100\.00% of keys, avg size 0\.00\)$", out, re.M), out


def test_memkeys(browsed):
    out = cli(browsed, "--memkeys").stdout
    assert "Sampled 151 keys in the keyspace!" in out, out
    biggest = re.search(r"^Biggest +lock found '\"(.+)\"' has (\d+) bytes$", out, re.M)
    assert biggest and biggest.group(1) == "pull:busy", out
    total = re.search(r"^151 locks with (\d+) bytes \(100\.00% of keys, avg size ([\d.]+)\)$", out, re.M)
    assert total, out
    # The key with a line of 40 waiters takes more than the sum of the others' average.
    assert int(biggest.group(2)) > 5 * float(total.group(2)) > 0, out


def stat_lines(server, seconds):
    """The lines `redis-cli --stat -i 0.2` prints in `seconds` (it never stops by itself)."""
    try:
        proc = subprocess.run(
            ["stdbuf", "-oL", "redis-cli", "-h", HOST, "-p", str(server.port), "--stat", "-i", "0.2"],
            capture_output=True,
            text=True,
            timeout=seconds,
        )
        out = proc.stdout
    except subprocess.TimeoutExpired as stopped:
        out = stopped.stdout.decode() if isinstance(stopped.stdout, bytes) else (stopped.stdout or "")
    return out.splitlines()


def test_stat(browsed):
    lines = stat_lines(browsed, 1.5)
    assert lines[:2] == [
        "------- data ------ --------------------- load -------------------- - child -",
        "keys       mem      clients blocked requests            connections          ",
    ], lines
    rows = [line.split() for line in lines[2:]]
    assert len(rows) >= 2, lines
    for row in rows:
        keys, mem, clients, blocked = row[:4]
        assert keys == "151", row
        # used_memory as redis-cli's bytesToHuman prints it: a real figure, not 0B.
        assert re.fullmatch(r"\d+\.\d\d[KMG]", mem), row
        assert int(clients) >= 2 and blocked == "0", row
    # requests counts on: each INFO is one.
    assert int(rows[-1][4]) > int(rows[0][4]), rows


# --- interactive mode in tmux ------------------------------------------------------------------


class Tmux:
    """A private tmux server (its own socket) with one window per redis-cli."""

    def __init__(self, socket):
        if not shutil.which("tmux"):
            pytest.fail("tmux is not installed (scripts/install-test-deps.sh installs it)")
        self.socket = str(socket)

    def tmux(self, *args):
        return subprocess.run(["tmux", "-S", self.socket, *args], capture_output=True, text=True, timeout=10)

    def start(self, name, command):
        first = self.tmux("has-session").returncode != 0
        verb = ["new-session", "-d", "-s", "cli", "-x", "150", "-y", "40"] if first else ["new-window", "-t", "cli"]
        proc = self.tmux(*verb, "-n", name, command)
        assert proc.returncode == 0, proc.stderr

    def screen(self, name):
        return self.tmux("capture-pane", "-p", "-t", f"cli:{name}").stdout

    def type(self, name, text):
        self.tmux("send-keys", "-t", f"cli:{name}", "-l", text)

    def key(self, name, *keys):
        self.tmux("send-keys", "-t", f"cli:{name}", *keys)

    def wait_for(self, name, pattern, timeout=10):
        regex = re.compile(pattern, re.M)
        return wait_until(lambda: regex.search(self.screen(name)), timeout=timeout,
                          message=f"{pattern!r} on the screen of {name}:\n{self.screen(name)}")

    def kill(self):
        self.tmux("kill-server")


@pytest.fixture
def tmux(tmp_path):
    session = Tmux(tmp_path / "tmux.sock")
    yield session
    session.kill()


def current_line(screen):
    lines = [line for line in screen.split("\n") if line.strip()]
    return lines[-1] if lines else ""


# Typing the command and a space shows what follows; each typed argument consumes a hint word.
HINTS = {
    "LOCK.TRY ": ["key owner [PX milliseconds] [NOQUEUE]"],
    "LOCK.WAIT ": ["key owner timeout-ms [PX milliseconds]"],
    "LOCK.UNLOCK ": ["key owner token SUCCESS|FAILURE [RESULT result] [KEEP keep-ms] [REASON reason]"],
    "LOCK.EXTEND ": ["key owner token milliseconds"],
    "LOCK.CANCEL ": ["key owner"],
    "LOCK.INFO ": ["key [COUNT count]"],
    "LOCK.TRY build:42 ": ["owner [PX milliseconds] [NOQUEUE]"],
    "lock.wait build:42 node-1 ": ["timeout-ms [PX milliseconds]"],
}


def test_interactive_hints(server, tmux):
    tmux.start("hints", f"redis-cli -h {HOST} -p {server.port}")
    prompt = f"{HOST}:{server.port}> "
    tmux.wait_for("hints", "^" + re.escape(prompt.rstrip()))  # capture-pane drops trailing blanks
    for typed, expected in HINTS.items():
        tmux.type("hints", typed)
        tmux.wait_for("hints", "^" + re.escape(prompt + typed) + r"\S")
        shown = current_line(tmux.screen("hints"))
        assert shown == prompt + typed + expected[0], f"typed {typed!r}, the screen shows {shown!r}"
        tmux.key("hints", "C-u")
        tmux.wait_for("hints", "^" + re.escape(prompt.rstrip()) + r"$")
    # help shows the summary from COMMAND DOCS.
    tmux.type("hints", "help LOCK.WAIT")
    tmux.key("hints", "Enter")
    tmux.wait_for("hints", r"^\s+LOCK\.WAIT key owner timeout-ms \[PX milliseconds\]$")
    tmux.wait_for("hints", r"summary: Take the lock or join its FIFO queue")
    tmux.wait_for("hints", r"group: generic")
    # Still alive and answering, no error seen.
    tmux.type("hints", "PING")
    tmux.key("hints", "Enter")
    tmux.wait_for("hints", r"^PONG$")
    assert "(error)" not in tmux.screen("hints") and "ERR" not in tmux.screen("hints")


def test_interactive_blocking_wait(server, tmux):
    prompt = re.escape(f"{HOST}:{server.port}>")
    tmux.start("holder", f"redis-cli -h {HOST} -p {server.port}")
    tmux.start("waiter", f"redis-cli -h {HOST} -p {server.port}")
    tmux.wait_for("holder", "^" + prompt)
    tmux.wait_for("waiter", "^" + prompt)

    tmux.type("holder", "LOCK.TRY demo node-a")
    tmux.key("holder", "Enter")
    token = tmux.wait_for("holder", r'^1\) "ACQUIRED"\n2\) \(integer\) (\d+)$').group(1)

    tmux.type("waiter", "LOCK.WAIT demo node-b 0")
    tmux.key("waiter", "Enter")
    wait_until(lambda: server.lock_info("demo")["blocked"] == 1, message="the interactive WAIT to block")
    time.sleep(0.3)
    assert "ACQUIRED" not in tmux.screen("waiter"), "the WAIT must block while node-a holds the lock"

    tmux.type("holder", f"LOCK.UNLOCK demo node-a {token} FAILURE REASON flaky")
    tmux.key("holder", "Enter")
    tmux.wait_for("holder", r"^\(integer\) 1$")
    granted = tmux.wait_for("waiter", r'^1\) "ACQUIRED"\n2\) \(integer\) (\d+)$').group(1)
    assert int(granted) > int(token)

    # Now node-a waits, with a timeout, and is told DONE when node-b succeeds.
    tmux.type("holder", "LOCK.WAIT demo node-a 10000")
    tmux.key("holder", "Enter")
    wait_until(lambda: server.lock_info("demo")["blocked"] == 1, message="node-a to block")
    tmux.type("waiter", f"LOCK.UNLOCK demo node-b {granted} SUCCESS RESULT sha256:42 KEEP 60000")
    tmux.key("waiter", "Enter")
    tmux.wait_for("waiter", r"^\(integer\) 1$")
    tmux.wait_for("holder", r'^1\) "DONE"\n2\) "node-b"\n3\) "sha256:42"$')

    # A WAIT that times out prints nil.
    tmux.type("waiter", "LOCK.TRY other node-b")
    tmux.key("waiter", "Enter")
    wait_until(lambda: server.lock_info("other")["holder"] == b"node-b", message="node-b to hold 'other'")
    tmux.type("holder", "LOCK.WAIT other node-a 300")
    tmux.key("holder", "Enter")
    tmux.wait_for("holder", r"^\(nil\)$")

    tmux.type("holder", "LOCK.INFO demo")
    tmux.key("holder", "Enter")
    tmux.wait_for("holder", r'^ 2\) "done"$')
    tmux.type("waiter", "LOCK.UNLOCK ")
    tmux.wait_for("waiter", r"LOCK\.UNLOCK key owner token SUCCESS\|FAILURE")
    screen = tmux.screen("waiter")
    assert "(error)" not in screen and "(error)" not in tmux.screen("holder")
    capture = os.environ.get("BATON_HINTS_CAPTURE")
    if capture:
        with open(capture, "w") as f:
            f.write("\n".join(line.rstrip() for line in screen.rstrip("\n").split("\n")) + "\n")
