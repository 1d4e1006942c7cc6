// ioredis against baton with no special settings: RESP3 (the default) and RESP2, the ready check
// (INFO, `loading:`), blocking LOCK.WAIT, AUTH. Run with `node --test` in this folder after
// `npm ci`; servers as in server.mjs.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import Redis from "ioredis";
import { infoObject, startServer, waitFor } from "./server.mjs";

const require = createRequire(import.meta.url);

const clients = [];
function client(server, options = {}) {
  const redis = new Redis({ host: "127.0.0.1", port: server.port, ...options });
  clients.push(redis);
  return redis;
}
after(() => {
  for (const redis of clients) redis.disconnect();
});

const server = await startServer();

test("ioredis is version 6 or later", () => {
  const version = require("ioredis/package.json").version;
  assert.ok(Number(version.split(".")[0]) >= 6, version);
});

for (const [label, options] of [
  ["RESP3 (default)", {}],
  ["RESP2", { protocol: 2 }],
  ["RESP3 with replyMapping resp3", { replyMapping: "resp3" }],
]) {
  test(`lock replies, ${label}`, async () => {
    const a = client(server, options);
    const b = client(server, options);
    const key = `io:replies:${label}`;
    const [kind, token] = await a.call("LOCK.TRY", key, "a", "PX", 5000);
    assert.equal(kind, "ACQUIRED");
    assert.ok(Number.isSafeInteger(token) && token > 0, String(token));
    assert.deepEqual(await b.call("LOCK.TRY", key, "b"), ["QUEUED", 1]);
    assert.deepEqual(await b.call("LOCK.TRY", key, "c", "NOQUEUE"), ["BUSY", "a"]);
    assert.equal(await b.call("LOCK.WAIT", key, "d", 50), null);

    const raw = await b.call("LOCK.INFO", key);
    assert.equal(Array.isArray(raw), options.replyMapping !== "resp3", "map shape follows replyMapping");
    const info = infoObject(raw);
    assert.equal(info.state, "held");
    assert.equal(info.holder, "a");
    assert.equal(info.token, token);
    assert.deepEqual(info.queue, ["b", "d"]);
    assert.equal(info.finisher, null);

    assert.equal(await a.call("LOCK.EXTEND", key, "a", token, 10_000), 1);
    await assert.rejects(b.call("LOCK.EXTEND", key, "b", token, 10), (err) => {
      assert.ok(err instanceof Redis.ReplyError);
      assert.match(err.message, /^NOTHOLDER /);
      return true;
    });
    assert.equal(await b.call("LOCK.CANCEL", key, "d"), 1);
    assert.equal(await a.call("LOCK.UNLOCK", key, "a", token, "SUCCESS", "RESULT", "built", "KEEP", 5000), 1);
    assert.deepEqual(await b.call("LOCK.TRY", key, "b"), ["DONE", "a", "built"]);
    assert.deepEqual(await b.call("LOCK.WAIT", key, "late", 0), ["DONE", "a", "built"]);
    // A retried UNLOCK (its reply was lost) gets the first one's answer; a stranger's is refused.
    assert.equal(await a.call("LOCK.UNLOCK", key, "a", token, "SUCCESS"), 1);
    await assert.rejects(a.call("LOCK.UNLOCK", key, "x", token, "SUCCESS"), /^ReplyError: NOLOCK /);
    await assert.rejects(a.call("LOCK.TRY", key), /wrong number of arguments for 'lock.try' command/);
  });
}

test("connecting: HELLO, CLIENT SETINFO and the INFO ready check (loading:0)", async () => {
  const redis = client(server);
  await new Promise((resolve, reject) => {
    redis.once("ready", resolve);
    redis.once("error", reject);
  });
  assert.equal(redis.status, "ready");
  const info = await redis.info();
  assert.match(info, /^loading:0\r$/m);
  assert.match(info, /^redis_version:7\./m);
  const me = await redis.client("INFO");
  assert.match(me, / lib-name=ioredis /);
  assert.match(me, / resp=3 /);
  const hello = infoObject(await redis.hello(3));
  assert.equal(hello.proto, 3);
  assert.equal(await redis.ping(), "PONG");
  assert.equal(typeof (await redis.dbsize()), "number");
});

test("a blocking LOCK.WAIT is answered by another client", async () => {
  const key = "io:block";
  const holder = client(server);
  const waiters = [client(server), client(server), client(server)];
  const [, token] = await holder.call("LOCK.TRY", key, "holder");
  const pending = waiters.map((w, i) => w.call("LOCK.WAIT", key, `w${i}`, 0).then((reply) => ({ i, reply })));
  await waitFor(async () => infoObject(await holder.call("LOCK.INFO", key)).blocked === 3, "3 blocked waiters");
  // FAILURE hands the lock to the head of the queue.
  assert.equal(await holder.call("LOCK.UNLOCK", key, "holder", token, "FAILURE", "REASON", "flaky"), 1);
  const first = await Promise.race(pending);
  assert.equal(first.reply[0], "ACQUIRED");
  assert.ok(first.reply[1] > token);
  // SUCCESS tells the two still waiting DONE.
  const told = await waiters[first.i].call("LOCK.UNLOCK", key, `w${first.i}`, first.reply[1], "SUCCESS", "RESULT", "ok");
  assert.equal(told, 2);
  const all = await Promise.all(pending);
  const done = all.filter(({ i }) => i !== first.i).map(({ reply }) => reply);
  assert.deepEqual(done, [["DONE", `w${first.i}`, "ok"], ["DONE", `w${first.i}`, "ok"]]);
});

test("a commandTimeout shorter than the WAIT fails on the client", async () => {
  const key = "io:timeout";
  const holder = client(server);
  await holder.call("LOCK.TRY", key, "holder");
  const impatient = client(server, { commandTimeout: 200 });
  await assert.rejects(impatient.call("LOCK.WAIT", key, "impatient", 2000), /Command timed out/);
  const patient = client(server, { commandTimeout: 3000 });
  const started = Date.now();
  assert.equal(await patient.call("LOCK.WAIT", key, "patient", 500), null);
  assert.ok(Date.now() - started >= 450);
});

test("stringNumbers keeps tokens exact as strings", async () => {
  const redis = client(server, { stringNumbers: true });
  const [kind, token] = await redis.call("LOCK.TRY", "io:strings", "a");
  assert.equal(kind, "ACQUIRED");
  assert.match(token, /^\d+$/);
  assert.equal(await redis.call("LOCK.EXTEND", "io:strings", "a", token, 1000), "1");
});

test("AUTH with requirepass, RESP3 and RESP2", async () => {
  const secured = await startServer("--requirepass", "io secret");
  for (const protocol of [3, 2]) {
    const good = client(secured, { protocol, password: "io secret" });
    assert.equal(await good.ping(), "PONG");
    assert.equal((await good.call("LOCK.TRY", `io:auth:${protocol}`, "a"))[0], "ACQUIRED");
    const userAndPassword = client(secured, { protocol, username: "default", password: "io secret" });
    assert.equal(await userAndPassword.ping(), "PONG");

    const wrong = client(secured, { protocol, password: "nope", retryStrategy: () => null, lazyConnect: true });
    const wrongError = new Promise((resolve) => wrong.once("error", resolve));
    await wrong.connect().catch(() => {});
    assert.match((await wrongError).message, /WRONGPASS/);

    const none = client(secured, { protocol, retryStrategy: () => null, maxRetriesPerRequest: 0, lazyConnect: true });
    const noneError = new Promise((resolve) => none.once("error", resolve));
    await none.connect().catch(() => {});
    assert.match((await noneError).message, /NOAUTH/);
  }
});
