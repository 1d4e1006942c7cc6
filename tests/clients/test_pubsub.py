"""redis-py's pubsub() and monitor() against baton: lock events (--notify-lock-events) heard
through SUBSCRIBE and PSUBSCRIBE in RESP2 and RESP3, CONFIG SET notify-lock-events, PUBLISH, and
MONITOR lines parsed by redis-py's own Monitor."""

import threading
import time

import pytest

from conftest import wait_until

PROTOCOLS = [2, 3]


def messages(pubsub, count, timeout=10.0):
    """The next `count` messages (not confirmations) as (type, pattern, channel, data) of str."""
    heard = []
    deadline = time.monotonic() + timeout
    while len(heard) < count:
        assert time.monotonic() < deadline, f"only heard {heard}"
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if message is None:
            continue
        pattern = message["pattern"].decode() if message["pattern"] else None
        heard.append((message["type"], pattern, message["channel"].decode(), message["data"].decode()))
    return heard


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_pubsub_hears_a_hand_off_in_order(baton, protocol):
    server = baton("--notify-lock-events")
    key = f"py:events:{protocol}"
    pubsub = server.redis(protocol=protocol).pubsub()
    pubsub.subscribe(f"__lock__:{key}")
    pubsub.psubscribe("__lock__:py:*")
    confirmations = [pubsub.get_message(timeout=5) for _ in range(2)]
    assert [m["type"] for m in confirmations] == ["subscribe", "psubscribe"], confirmations
    assert [m["data"] for m in confirmations] == [1, 2]

    holder = server.redis(protocol=protocol)
    waiter = server.redis(protocol=protocol)
    token = holder.execute_command("LOCK.TRY", key, "node-a")[1]
    answer = {}
    thread = threading.Thread(target=lambda: answer.update(reply=waiter.execute_command("LOCK.WAIT", key, "node-b", 0)))
    thread.start()
    wait_until(lambda: server.lock_info(key)["blocked"] == 1, message="the waiter to block")
    assert holder.execute_command("LOCK.UNLOCK", key, "node-a", token, "FAILURE", "REASON", "pull failed") == 1
    thread.join(10)
    granted = answer["reply"]
    assert granted[0] == b"ACQUIRED" and granted[1] > token
    assert waiter.execute_command("LOCK.UNLOCK", key, "node-b", granted[1], "SUCCESS") == 0

    channel = f"__lock__:{key}"
    expected = []
    for event in ["granted", "released", "handoff", "done"]:
        expected += [("message", None, channel, event), ("pmessage", "__lock__:py:*", channel, event)]
    assert messages(pubsub, len(expected)) == expected
    pubsub.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_config_set_turns_events_on_and_publish_reaches_subscribers(server, protocol):
    client = server.redis(protocol=protocol)
    assert client.config_get("notify-lock-events") == {"notify-lock-events": "no"}
    pubsub = server.redis(protocol=protocol).pubsub()
    pubsub.subscribe("__lock__:k", "news")
    assert client.publish("news", "hello") == 1
    assert messages(pubsub, 1) == [("message", None, "news", "hello")]

    client.execute_command("LOCK.TRY", "k", "off")
    assert client.config_set("notify-lock-events", "yes")
    client.execute_command("LOCK.TRY", "k", "on", "NOQUEUE")
    client.execute_command("LOCK.TRY", "k", "queued")
    assert client.execute_command("LOCK.CANCEL", "k", "queued") == 1
    assert messages(pubsub, 1) == [("message", None, "__lock__:k", "cancelled")], "nothing from before"
    assert client.pubsub_numsub("news", "__lock__:k") == [(b"news", 1), (b"__lock__:k", 1)]
    pubsub.unsubscribe()
    wait_until(lambda: client.pubsub_channels() == [], message="the subscriptions to end")
    pubsub.close()


def test_monitor_lines_parse_with_redis_py(baton):
    server = baton(password="secret")
    client = server.redis()
    with server.redis().monitor() as monitor:
        client.execute_command("LOCK.TRY", "pull:layer", "node a")
        client.execute_command("AUTH", "secret")
        commands = [monitor.next_command() for _ in range(2)]
    assert [c["command"] for c in commands] == ["LOCK.TRY pull:layer node a", "AUTH (redacted)"]
    assert all(c["db"] == 0 and c["client_type"] == "tcp" for c in commands), commands
    port = client.client_info()["laddr"]
    assert commands[0]["client_address"] == "127.0.0.1" and port
    assert abs(commands[0]["time"] - time.time()) < 60
