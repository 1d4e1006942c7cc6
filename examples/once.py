#!/usr/bin/env python3
"""Do an operation once across all nodes, with baton and redis-py.

Every node runs this with the same key and its own node id. One of them runs the command while the
others wait in baton's queue; when it succeeds they are all told DONE (with its result) and skip the
work; when it fails the next node in line gets the lock and tries.

    python3 examples/once.py --port 6390 --key build:42 --node "$(hostname)" -- make image

It prints what it did, one line per step, the last line being the outcome:
``<node>: SUCCESS result=...`` (exit 0), ``<node>: DONE finisher=... result=...`` (exit 0, work
skipped), ``<node>: FAILURE reason=...`` (exit 1), ``<node>: LOST ...`` (exit 3: the lock was lost
while working). Connection and usage errors go to stderr with exit 2.

The points that matter with redis-py (``pip install redis``), whose defaults are used throughout:
- One connection from LOCK.WAIT to LOCK.UNLOCK (``single_connection_client=True``): baton releases
  the lock as FAILURE when the connection that took it closes.
- Each LOCK.WAIT blocks for --wait-ms at most, shorter than the client's read timeout (redis-py's
  default ``socket_timeout`` is 5 s), and is sent again when it times out: the owner keeps its place
  in line. A WAIT that outlived the read timeout would end in a TimeoutError, which redis-py's
  default retry answers by reconnecting and sending the WAIT again, and again.
- redis-py's default retries are safe here: a re-sent WAIT by the same owner keeps its place (or
  gets the same token), a re-sent UNLOCK gets the first one's answer, and a lock lost with a
  dropped connection makes the next EXTEND or UNLOCK answer NOTHOLDER or NOLOCK.
- While the command runs, LOCK.EXTEND renews the lease every lease/3 (this process only waits for
  the command, so no thread shares the connection).
"""

import argparse
import os
import subprocess
import sys
import tempfile

import redis

# Time a WAIT needs on top of its timeout-ms before the client has its reply: a round trip and the
# server's timer, with room for a busy machine.
REPLY_MARGIN_MS = 1000


class UsageError(Exception):
    pass


def text(value):
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def parse_args(argv):
    parser = argparse.ArgumentParser(description="Run a command once across all nodes that run this with the same key.")
    parser.add_argument("--host", default="127.0.0.1", help="baton server host")
    parser.add_argument("--port", type=int, default=6390, help="baton server port")
    parser.add_argument("--password", default=os.environ.get("BATON_PASSWORD"),
                        help="password if the server runs with --requirepass (or BATON_PASSWORD)")
    parser.add_argument("--key", required=True, help="the lock key: one key per operation")
    parser.add_argument("--node", required=True, help="this node's id, the lock owner; unique per node")
    parser.add_argument("--lease-ms", type=int, default=30_000,
                        help="lease of the lock (and of our place in line); renewed every lease/3 while working")
    parser.add_argument("--wait-ms", type=int, default=2_000,
                        help="how long one LOCK.WAIT blocks before we ask again (our place is kept); "
                             "below the client's read timeout")
    parser.add_argument("--keep-ms", type=int, default=600_000,
                        help="how long the server remembers the success, answering DONE to late nodes")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="-- then the work: its stdout becomes the RESULT; a non-zero exit is a FAILURE")
    args = parser.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command:
        parser.error("the work is missing: add -- and a command")
    return args


def connect(args):
    """One connection with redis-py's defaults, checked against --wait-ms."""
    r = redis.Redis(host=args.host, port=args.port, password=args.password, single_connection_client=True)
    read_timeout = r.get_connection_kwargs().get("socket_timeout")
    if read_timeout is not None and not 0 < args.wait_ms <= read_timeout * 1000 - REPLY_MARGIN_MS:
        r.close()
        raise UsageError(
            f"--wait-ms must be between 1 and {read_timeout * 1000 - REPLY_MARGIN_MS:.0f}: "
            f"each LOCK.WAIT must end before the client's {read_timeout} s read timeout"
        )
    return r


def wait_for_turn(r, args):
    """Returns ("ACQUIRED", token) or ("DONE", finisher, result)."""
    while True:
        reply = r.execute_command("LOCK.WAIT", args.key, args.node, args.wait_ms, "PX", args.lease_ms)
        if reply is None:
            # Timed out: our place in line is kept, ask again.
            print(f"{args.node}: STILL WAITING", flush=True)
            continue
        kind = text(reply[0])
        if kind == "ACQUIRED":
            return ("ACQUIRED", int(reply[1]))
        if kind == "DONE":
            return ("DONE", text(reply[1]), text(reply[2]))
        raise RuntimeError(f"unexpected LOCK.WAIT reply {reply!r}")


def run_work(r, args, token):
    """Runs the command, renewing the lease every lease/3.

    Returns (succeeded, result or failure reason, lost): lost is set when EXTEND was refused and
    the work was stopped."""
    env = dict(os.environ, BATON_KEY=args.key, BATON_NODE=args.node, BATON_TOKEN=str(token))
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.Popen(args.command, stdout=out, env=env)
        except OSError as err:
            return False, f"cannot start {args.command[0]}: {err}", None
        every = max(args.lease_ms / 3, 1) / 1000
        while True:
            try:
                code = proc.wait(timeout=every)
                break
            except subprocess.TimeoutExpired:
                pass
            try:
                r.execute_command("LOCK.EXTEND", args.key, args.node, token, args.lease_ms)
                print(f"{args.node}: EXTENDED token={token} lease_ms={args.lease_ms}", flush=True)
            except redis.RedisError as err:
                proc.kill()
                proc.wait()
                return False, "", f"LOCK.EXTEND refused, work stopped: {err}"
        if code != 0:
            return False, f"exit status {code}" if code > 0 else f"terminated (signal {-code})", None
        out.seek(0)
        return True, out.read().decode("utf-8", "replace").rstrip(), None


def once(args):
    r = connect(args)
    node = args.node
    print(f"{node}: WAITING key={args.key}", flush=True)
    turn = wait_for_turn(r, args)
    if turn[0] == "DONE":
        print(f"{node}: DONE finisher={turn[1]} result={turn[2]}", flush=True)
        return 0
    token = turn[1]
    print(f"{node}: ACQUIRED token={token}", flush=True)

    succeeded, outcome, lost = run_work(r, args, token)
    if lost:
        print(f"{node}: LOST {lost}", flush=True)
        return 3
    try:
        if succeeded:
            r.execute_command("LOCK.UNLOCK", args.key, node, token, "SUCCESS", "RESULT", outcome, "KEEP", args.keep_ms)
            print(f"{node}: SUCCESS result={outcome}", flush=True)
            return 0
        r.execute_command("LOCK.UNLOCK", args.key, node, token, "FAILURE", "REASON", outcome)
        print(f"{node}: FAILURE reason={outcome}", flush=True)
        return 1
    except redis.ResponseError as err:
        # NOTHOLDER / NOLOCK: the lease ran out or the connection was lost; someone else may redo it.
        print(f"{node}: LOST LOCK.UNLOCK refused: {err}", flush=True)
        return 3
    finally:
        r.close()


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return once(args)
    except UsageError as err:
        print(f"once.py: {err}", file=sys.stderr, flush=True)
        return 2
    except (redis.RedisError, RuntimeError) as err:
        print(f"{args.node}: ERROR {err}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
