"""deploy/: the systemd unit and the Grafana dashboard, each checked against the real binary.

- deploy/baton.service passes `systemd-analyze verify` (with ExecStart pointed at the built
  binary, which verify requires to exist) and keeps its hardening (`systemd-analyze security`);
  the server starts with the unit's own flags and environment, and stops on the unit's KillSignal
  well within its TimeoutStopSec.
- every metric that deploy/grafana/baton.json queries is exported on /metrics by a running server
  after some lock traffic.
"""

import json
import re
import shlex
import shutil
import signal
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from conftest import BATON, HOST, ROOT, as_dict, free_port, wait_until

UNIT = ROOT / "deploy" / "baton.service"
DASHBOARD = ROOT / "deploy" / "grafana" / "baton.json"
INSTALLED_BINARY = "/usr/local/bin/baton"
STATE_DIRECTORY = "/var/lib/baton"


# --- the systemd unit ------------------------------------------------------------------------------


def unit_settings():
    """The [Service] section as (key, value) pairs, in order (keys may repeat)."""
    settings, section = [], None
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            settings.append((key.strip(), value.strip()))
    return settings


def setting(key):
    values = [value for name, value in unit_settings() if name == key]
    assert len(values) == 1, f"{key}= appears {len(values)} times in {UNIT}"
    return values[0]


def systemd_analyze():
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze is missing (scripts/install-test-deps.sh installs systemd)")
    return path


def unit_with_built_binary(tmp_path):
    """A copy of the unit that runs the binary under test: verify checks that ExecStart exists."""
    text = UNIT.read_text()
    assert text.count(INSTALLED_BINARY) >= 1
    copy = tmp_path / "baton.service"
    copy.write_text(text.replace(INSTALLED_BINARY, str(BATON.resolve())))
    return copy


def test_unit_passes_systemd_analyze_verify(tmp_path):
    analyze = systemd_analyze()
    unit = unit_with_built_binary(tmp_path)
    verified = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0 and "baton.service" not in verified.stderr, verified
    # And verify is not a rubber stamp: a unit whose binary is missing fails it.
    unit.write_text(UNIT.read_text().replace(INSTALLED_BINARY, str(tmp_path / "missing" / "baton")))
    broken = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert broken.returncode != 0 and "is not executable" in broken.stderr, broken


def test_unit_is_hardened(tmp_path):
    """systemd's own exposure score stays at "OK" (2.0 or less, out of 10)."""
    analyze = systemd_analyze()
    unit = unit_with_built_binary(tmp_path)
    scored = subprocess.run(
        [analyze, "security", "--offline=yes", "--threshold=20", "--no-pager", str(unit)],
        capture_output=True, text=True, timeout=60,
    )
    assert scored.returncode == 0, scored.stdout[-3000:] + scored.stderr
    assert setting("DynamicUser") == "yes" and setting("StateDirectory") == "baton"
    assert setting("NoNewPrivileges") == "yes" and setting("ProtectSystem") == "strict"


def unit_environment():
    """Environment= of the unit, as systemd reads it (space-separated, shell-like quotes)."""
    environment = {}
    for name, value in unit_settings():
        if name == "Environment":
            for assignment in shlex.split(value):
                key, _, val = assignment.partition("=")
                environment[key] = val
    return environment


def exec_start(environment):
    """ExecStart= as argv, with systemd's ${VAR} (one word) and $VAR (split into words)."""
    words = []
    for word in shlex.split(setting("ExecStart")):
        braced = re.fullmatch(r"\$\{(\w+)\}", word)
        bare = re.fullmatch(r"\$(\w+)", word)
        if braced:
            words.append(environment.get(braced.group(1), ""))
        elif bare:
            words.extend(environment.get(bare.group(1), "").split())
        else:
            words.append(word)
    return words


def seconds(timespan):
    match = re.fullmatch(r"(\d+)(s|min)?", timespan)
    assert match, f"TimeoutStopSec={timespan} is not in plain seconds or minutes"
    return int(match.group(1)) * (60 if match.group(2) == "min" else 1)


def test_server_runs_with_the_units_settings_and_stops_on_its_kill_signal(tmp_path):
    """The unit's ExecStart flags and Environment= as given, with the paths and ports moved into
    this test's sandbox; the unit's KillSignal ends it with status 0 well within TimeoutStopSec."""
    environment = unit_environment()
    port, metrics_port = free_port(), free_port()
    environment.update(BATON_PORT=str(port), BATON_METRICS_ADDR=f"{HOST}:{metrics_port}")
    argv = exec_start(environment)
    assert argv[0] == INSTALLED_BINARY and STATE_DIRECTORY in argv, argv
    state = tmp_path / "state"
    argv = [str(BATON)] + [str(state) if word == STATE_DIRECTORY else word for word in argv[1:]]
    kill_signal = getattr(signal, setting("KillSignal"))
    timeout = seconds(setting("TimeoutStopSec"))
    with open(tmp_path / "baton.log", "wb") as log:
        proc = subprocess.Popen(argv, env=environment, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: metrics_page(metrics_port) is not None, timeout=10, message="the metrics endpoint")
            client = redis.Redis(host=HOST, port=port, socket_timeout=5)
            token = client.execute_command("LOCK.TRY", "deploy:unit", "a")[1]
            client.execute_command("LOCK.UNLOCK", "deploy:unit", "a", token, "SUCCESS")
            client.close()
            assert any(state.iterdir()), "the journal is written under --dir"
            started = time.monotonic()
            proc.send_signal(kill_signal)
            assert proc.wait(timeout=timeout) == 0
            # Its own grace for connections is 5 s: half the stop timeout is the least room left.
            assert time.monotonic() - started < timeout / 2
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert b"bye" in (tmp_path / "baton.log").read_bytes()


# --- the Grafana dashboard ---------------------------------------------------------------------------

PROMQL_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "offset", "atan2", "inf", "nan",
}


def metric_names(expr):
    """The metric names a PromQL expression (with Grafana variables) selects."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', " ", expr)  # strings
    expr = re.sub(r"\$\{\w+(?::\w+)?\}|\$\w+|\[\[\w+\]\]", " ", expr)  # Grafana variables
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # ranges and subqueries
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w:.])[A-Za-z_:][\w:]*", expr):
        name = match.group(0)
        followed_by_call = re.match(r"\s*\(", expr[match.end():])
        if not followed_by_call and name not in PROMQL_KEYWORDS:
            names.add(name)
    return names


def test_metric_names_are_read_from_promql():
    expr = (
        'sum by (instance) (rate(baton_a_total{instance=~"$instance", job="x y"}[$__rate_interval])) '
        "/ on(instance) group_left baton_b + histogram_quantile(0.99, baton_c_bucket[5m] offset 1h) > bool 2"
    )
    assert metric_names(expr) == {"baton_a_total", "baton_b", "baton_c_bucket"}


def dashboard_queries():
    """Every PromQL expression in the dashboard: panel targets (rows included) and the template
    variables' label_values(metric, label) queries."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []

    def walk(panels):
        for panel in panels:
            queries.extend((panel["title"], target["expr"]) for target in panel.get("targets", []))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            selector = re.fullmatch(r"label_values\((.+),\s*\w+\)", query)
            assert selector, f"variable {variable['name']}: {query}"
            queries.append((f"${variable['name']}", selector.group(1)))
    return queries


def metrics_page(port):
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as response:
            return response.read().decode()
    except OSError:
        return None


def exported(page):
    """{metric name: [sample values]} from a Prometheus text page."""
    samples = {}
    for line in page.splitlines():
        if line and not line.startswith("#"):
            name = re.match(r"[A-Za-z_:][\w:]*", line).group(0)
            samples.setdefault(name, []).append(float(line.rsplit(" ", 1)[1]))
    return samples


def lock_traffic(server):
    """Grants, a hand-off to a blocked waiter, a FAILURE, a SUCCESS with DONE answers, a lease
    expiry, a holder that disconnects; one waiter stays in line."""
    holder = server.redis()
    token = holder.execute_command("LOCK.TRY", "dash:handoff", "holder")[1]
    with ThreadPoolExecutor(1) as pool:
        waiter = server.redis()
        waiting = pool.submit(waiter.execute_command, "LOCK.WAIT", "dash:handoff", "waiter", 5000)
        wait_until(lambda: server.lock_info("dash:handoff")["blocked"] == 1, message="the WAIT to block")
        holder.execute_command("LOCK.UNLOCK", "dash:handoff", "holder", token, "FAILURE", "REASON", "dashboard")
        granted = waiting.result(timeout=5)
    assert granted[0] == b"ACQUIRED"
    assert holder.execute_command("LOCK.TRY", "dash:handoff", "late") == [b"QUEUED", 1]
    waiter.execute_command("LOCK.UNLOCK", "dash:handoff", "waiter", granted[1], "SUCCESS", "RESULT", "ok")
    assert holder.execute_command("LOCK.TRY", "dash:handoff", "late") == [b"DONE", b"waiter", b"ok"]
    holder.execute_command("LOCK.TRY", "dash:lease", "holder", "PX", 50)
    wait_until(lambda: server.info()["lock_lease_expiries"] == 1, message="the lease to run out")
    leaving = server.redis()
    leaving.execute_command("LOCK.TRY", "dash:disconnect", "leaving")
    leaving.close()
    wait_until(lambda: server.info()["lock_disconnect_releases"] == 1, message="the release on disconnect")
    holder.execute_command("LOCK.TRY", "dash:held", "holder")
    waiter.execute_command("LOCK.TRY", "dash:held", "queued")
    return holder, waiter


def test_every_metric_the_dashboard_queries_is_exported(baton):
    queries = dashboard_queries()
    wanted = {name: title for title, expr in queries for name in metric_names(expr)}
    assert len(queries) >= 20 and len(wanted) >= 15, queries
    metrics_port = free_port()
    server = baton("--metrics-addr", f"{HOST}:{metrics_port}")
    clients = lock_traffic(server)
    page = wait_until(lambda: metrics_page(metrics_port), message="the metrics page")
    samples = exported(page)
    missing = {name: title for name, title in wanted.items() if name not in samples}
    assert not missing, f"queried by the dashboard but not exported: {missing}\n{page}"
    # The traffic shows on the series the panels plot.
    for name in (
        "baton_lock_grants_total", "baton_lock_handoffs_total", "baton_lock_failures_total",
        "baton_lock_successes_total", "baton_lock_lease_expiries_total", "baton_lock_disconnect_releases_total",
        "baton_lock_done_answers_total", "baton_lock_waiters", "baton_locks_held", "baton_connected_clients",
        "baton_handoff_latency_samples_total",
    ):
        assert name in wanted and min(samples[name]) > 0, (name, samples.get(name))
    assert len(samples["baton_handoff_latency_seconds"]) == 3 and max(samples["baton_handoff_latency_seconds"]) > 0
    info = as_dict(clients[0].execute_command("LOCK.INFO", "dash:held"))
    assert info["waiters"] == 1 and samples["baton_lock_waiters"] == [1.0]
    for client in clients:
        client.close()
