// Lock events (`--notify-lock-events`) and MONITOR through the stock APIs of ioredis (subscribe,
// psubscribe, monitor) and node-redis (subscribe, pSubscribe, monitor), in RESP2 and RESP3: a
// subscriber watches a hand-off (the holder fails, the waiter gets the lock and finishes).
import { test, after } from "node:test";
import assert from "node:assert/strict";
import Redis from "ioredis";
import { createClient } from "redis";

import { infoObject, startServer, waitFor } from "./server.mjs";

const server = await startServer("--notify-lock-events");
const closers = [];
after(async () => {
  for (const close of closers) await close();
});

function ioredis(options = {}) {
  const redis = new Redis({ host: "127.0.0.1", port: server.port, ...options });
  closers.push(async () => redis.disconnect());
  return redis;
}

async function nodeRedis(RESP) {
  const client = createClient({ url: `redis://127.0.0.1:${server.port}`, RESP });
  client.on("error", () => {});
  await client.connect();
  closers.push(async () => client.destroy());
  return client;
}

const EVENTS = ["granted", "released", "handoff", "done"];

// What a subscriber hears of a hand-off on `key`, as EVENTS in order.
async function handOff(key) {
  const holder = ioredis();
  const waiter = ioredis();
  const [, token] = await holder.call("LOCK.TRY", key, "node-a");
  const waiting = waiter.call("LOCK.WAIT", key, "node-b", 0);
  await waitFor(async () => infoObject(await holder.call("LOCK.INFO", key)).blocked === 1, "the waiter to block");
  assert.equal(await holder.call("LOCK.UNLOCK", key, "node-a", token, "FAILURE"), 1);
  const [kind, granted] = await waiting;
  assert.equal(kind, "ACQUIRED");
  assert.equal(await waiter.call("LOCK.UNLOCK", key, "node-b", granted, "SUCCESS"), 0);
}

async function heard(list, count) {
  await waitFor(() => list.length >= count, `${count} messages, heard ${JSON.stringify(list)}`);
  return list;
}

for (const protocol of [3, 2]) {
  test(`ioredis subscribe and psubscribe, RESP${protocol}`, async () => {
    const key = `node:io:${protocol}`;
    const subscriber = ioredis({ protocol });
    const messages = [];
    subscriber.on("message", (channel, message) => messages.push(["message", channel, message]));
    subscriber.on("pmessage", (pattern, channel, message) => messages.push([pattern, channel, message]));
    assert.equal(await subscriber.subscribe(`__lock__:${key}`), 1);
    assert.equal(await subscriber.psubscribe("__lock__:node:io:*"), 2);
    await handOff(key);
    const expected = EVENTS.flatMap((event) => [
      ["message", `__lock__:${key}`, event],
      ["__lock__:node:io:*", `__lock__:${key}`, event],
    ]);
    assert.deepEqual(await heard(messages, expected.length), expected);
    // Named: ioredis 6 in RESP3 waits for ever on a bare UNSUBSCRIBE, against Redis too.
    assert.equal(await subscriber.unsubscribe(`__lock__:${key}`), 1);
    assert.equal(await subscriber.punsubscribe("__lock__:node:io:*"), 0);
  });

  test(`node-redis subscribe and pSubscribe, RESP${protocol}`, async () => {
    const key = `node:nr:${protocol}`;
    const subscriber = await nodeRedis(protocol);
    const messages = [];
    await subscriber.subscribe(`__lock__:${key}`, (message, channel) => messages.push(["message", channel, message]));
    await subscriber.pSubscribe("__lock__:node:nr:*", (message, channel) => messages.push(["pmessage", channel, message]));
    await handOff(key);
    const expected = EVENTS.flatMap((event) => [
      ["message", `__lock__:${key}`, event],
      ["pmessage", `__lock__:${key}`, event],
    ]);
    assert.deepEqual(await heard(messages, expected.length), expected);
    // Named, for the same reason as with ioredis: node-redis 5 in RESP3 waits on a bare one.
    await subscriber.unsubscribe(`__lock__:${key}`);
    await subscriber.pUnsubscribe("__lock__:node:nr:*");
  });
}

test("ioredis monitor", async () => {
  const monitor = await ioredis().monitor();
  closers.push(async () => monitor.disconnect());
  const seen = [];
  monitor.on("monitor", (time, args) => seen.push({ time, args }));
  const client = ioredis();
  await client.call("LOCK.TRY", "node:monitor", "node a");
  // The new client's handshake (HELLO, CLIENT SETINFO) comes first.
  await waitFor(() => seen.some(({ args }) => args[0] === "LOCK.TRY"), `the LOCK.TRY, saw ${JSON.stringify(seen)}`);
  const line = seen.find(({ args }) => args[0] === "LOCK.TRY");
  assert.deepEqual(line.args, ["LOCK.TRY", "node:monitor", "node a"]);
  assert.ok(Math.abs(Number(line.time) - Date.now() / 1000) < 60, line.time);
});

test("node-redis monitor", async () => {
  const monitor = await nodeRedis(2);
  const lines = [];
  await monitor.monitor((line) => lines.push(line));
  const client = await nodeRedis(2);
  await client.sendCommand(["LOCK.TRY", "node:nr-monitor", "owner"]);
  await waitFor(() => lines.some((line) => line.includes('"LOCK.TRY"')), `the LOCK.TRY, saw ${JSON.stringify(lines)}`);
  const line = lines.find((line) => line.includes('"LOCK.TRY"'));
  assert.match(line, /^\d+\.\d{6} \[0 127\.0\.0\.1:\d+\] "LOCK\.TRY" "node:nr-monitor" "owner"$/);
});
