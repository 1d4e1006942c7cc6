"""What redis-commander (0.9, over ioredis 5) sends when its page loads and its key tree opens, sent
with redis-py: every command must be answered (an error is an answer; a hang is not), and the key
tree's commands must work.

The sequence, from redis-commander's sources:
- ioredis on connect (lib/redis/event_handler.ts): INFO (its ready check; SELECT first for a db
  other than 0), then CLIENT SETNAME redis-commander;
- on connect (lib/connections.js, _connectToDB): COMMAND, MODULE LIST, INFO cluster;
- the server page (lib/routes/apiv1.js, getServerInfo): INFO; the login form's database probe
  (lib/routes/home.js): INFO keyspace, CONFIG GET databases;
- the key tree (getKeysTree): `keys(pattern)`, which redis-commander redefines with its default
  `useScan` (bin/redis-commander.js) as SCAN cursor MATCH pattern COUNT 100 until the cursor is 0,
  then TYPE of every key that is a leaf at that level; opening a folder `pull:` does the same with
  MATCH pull:*; a key's page (getKeyDetails) starts with TYPE.

Until baton answered SCAN, redis-commander's `keys` promise was rejected and getKeysTree returned
without answering the browser: the tree never loaded.
"""

import pytest
import redis

from conftest import as_dict

SCAN_COUNT = 100  # redis-commander's default `redis.scanCount`


def send(client, log, *args):
    """Sends one command; records and returns its reply, or the error it was answered with."""
    try:
        reply = client.execute_command(*args)
    except redis.ResponseError as error:
        reply = error
    log.append((args, reply))
    return reply


def keys_like_redis_commander(client, log, pattern):
    cursor, keys = b"0", []
    while True:
        reply = send(client, log, "SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_COUNT)
        assert isinstance(reply, list) and len(reply) == 2, reply
        cursor, found = reply
        keys.extend(found)
        if int(cursor) == 0:
            return keys


@pytest.fixture
def locks(server):
    holder = server.redis()
    for key in ["pull:a", "pull:b", "pull:deep:c", "solo"]:
        assert holder.execute_command("LOCK.TRY", key, "node", "PX", 600000)[0] == b"ACQUIRED"
    yield server
    holder.close()


def test_every_command_of_a_page_load_is_answered(locks):
    # A hang fails here instead of hanging the suite.
    client = locks.redis(socket_timeout=5)
    # The replies as sent (ioredis does not parse INFO or SELECT's OK).
    client.response_callbacks.clear()
    log = []
    info = send(client, log, "INFO")
    assert b"# Memory" in info and b"used_memory:" in info
    assert send(client, log, "CLIENT", "SETNAME", "redis-commander") == b"OK"
    commands = send(client, log, "COMMAND")
    names = {entry[0] for entry in commands}
    assert {b"scan", b"type", b"exists", b"memory", b"info"} <= names
    # redis-commander's read-only command list is the `readonly` flag of each entry.
    readonly = {entry[0] for entry in commands if b"readonly" in entry[2]}
    assert {b"scan", b"type", b"exists", b"lock.info"} <= readonly
    assert isinstance(send(client, log, "MODULE", "LIST"), redis.ResponseError)
    # redis-commander switches to cluster mode on cluster_enabled:1; a single node says 0, as Redis.
    assert b"cluster_enabled:0" in send(client, log, "INFO", "cluster")
    send(client, log, "INFO")
    assert b"db0:keys=4" in send(client, log, "INFO", "keyspace")
    assert as_dict(send(client, log, "CONFIG", "GET", "databases")) == {"databases": b"1"}
    assert isinstance(send(client, log, "SELECT", "1"), redis.ResponseError)
    assert send(client, log, "SELECT", "0") == b"OK"

    # The tree's first level: folders (with the folding character `:`) and leaves.
    root = keys_like_redis_commander(client, log, "*")
    assert sorted(root) == [b"pull:a", b"pull:b", b"pull:deep:c", b"solo"]
    assert send(client, log, "TYPE", "solo") == b"lock"
    # Opening the folder `pull:`.
    pulls = keys_like_redis_commander(client, log, "pull:*")
    assert sorted(pulls) == [b"pull:a", b"pull:b", b"pull:deep:c"]
    for leaf in [b"pull:a", b"pull:b"]:
        assert send(client, log, "TYPE", leaf) == b"lock"
    # A key's page; and a key gone meanwhile.
    assert send(client, log, "TYPE", "pull:a") == b"lock"
    assert send(client, log, "TYPE", "pull:gone") == b"none"
    client.close()
    unanswered = [args for args, reply in log if reply is None]
    assert not unanswered, unanswered
