// node-redis 5 (npm `redis`) against baton with its default settings, in RESP2 (its default) and
// RESP3: the handshake (HELLO, CLIENT SETINFO), reply shapes, a blocking LOCK.WAIT on a client of
// its own (`duplicate()`), whole WAIT-to-UNLOCK operations on the pool's isolated clients
// (`createClientPool` + `execute`), AUTH. Run with `node --test` in this folder after `npm ci`.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { createClient, createClientPool } from "redis";
import { infoObject, startServer, waitFor } from "./server.mjs";

const require = createRequire(import.meta.url);
const PROTOCOLS = [2, 3];

const opened = [];
async function connected(server, options = {}) {
  const client = createClient({ socket: { host: "127.0.0.1", port: server.port }, ...options });
  client.on("error", () => {}); // reported by the command that fails
  opened.push(client);
  return client.connect();
}
async function pooled(server, options, poolOptions) {
  const pool = createClientPool({ socket: { host: "127.0.0.1", port: server.port }, ...options }, poolOptions);
  pool.on("error", () => {});
  opened.push(pool);
  return pool.connect();
}
after(() => {
  for (const client of opened) if (client.isOpen) client.destroy();
});

const server = await startServer();

test("node-redis is version 5", () => {
  const version = require("redis/package.json").version;
  assert.equal(Number(version.split(".")[0]), 5, version);
});

for (const RESP of PROTOCOLS) {
  test(`lock replies, RESP${RESP}`, async () => {
    const a = await connected(server, { RESP });
    const b = await connected(server, { RESP });
    const key = `nr:replies:${RESP}`;
    const [kind, token] = await a.sendCommand(["LOCK.TRY", key, "a", "PX", "5000"]);
    assert.equal(kind, "ACQUIRED");
    assert.ok(Number.isSafeInteger(token) && token > 0, String(token));
    assert.deepEqual(await b.sendCommand(["LOCK.TRY", key, "b"]), ["QUEUED", 1]);
    assert.deepEqual(await b.sendCommand(["LOCK.TRY", key, "c", "NOQUEUE"]), ["BUSY", "a"]);
    assert.equal(await b.sendCommand(["LOCK.WAIT", key, "d", "50"]), null, "a WAIT that times out is null");

    const info = infoObject(await b.sendCommand(["LOCK.INFO", key]));
    assert.equal(info.state, "held");
    assert.equal(info.holder, "a");
    assert.equal(info.token, token);
    assert.deepEqual(info.queue, ["b", "d"]);
    assert.equal(info.finisher, null);

    assert.equal(await a.sendCommand(["LOCK.EXTEND", key, "a", String(token), "10000"]), 1);
    await assert.rejects(b.sendCommand(["LOCK.EXTEND", key, "b", String(token), "10"]), /^\[?\w*Error\]?:? ?NOTHOLDER /);
    assert.equal(await b.sendCommand(["LOCK.CANCEL", key, "d"]), 1);
    const unlock = ["LOCK.UNLOCK", key, "a", String(token), "SUCCESS", "RESULT", "built", "KEEP", "5000"];
    assert.equal(await a.sendCommand(unlock), 1);
    assert.deepEqual(await b.sendCommand(["LOCK.TRY", key, "b"]), ["DONE", "a", "built"]);
    assert.deepEqual(await b.sendCommand(["LOCK.WAIT", key, "late", "0"]), ["DONE", "a", "built"]);
    assert.equal(await a.sendCommand(unlock), 1, "a retried UNLOCK gets the first one's answer");
  });

  test(`connecting: HELLO and CLIENT SETINFO, RESP${RESP}`, async () => {
    const client = await connected(server, { RESP });
    assert.equal(await client.ping(), "PONG");
    const me = await client.sendCommand(["CLIENT", "INFO"]);
    assert.match(me, / lib-name=node-redis /);
    assert.match(me, / lib-ver=5\./);
    assert.match(me, new RegExp(` resp=${RESP} `));
    assert.match(await client.info("server"), /^redis_version:7\./m);
  });

  test(`a blocking LOCK.WAIT on a duplicate() client, default settings, RESP${RESP}`, async () => {
    const key = `nr:block:${RESP}`;
    const holder = await connected(server, { RESP });
    // node-redis has no read timeout by default: a WAIT may block as long as it likes.
    const waiter = await holder.duplicate().on("error", () => {}).connect();
    opened.push(waiter);
    const [, token] = await holder.sendCommand(["LOCK.TRY", key, "holder"]);
    const waiting = waiter.sendCommand(["LOCK.WAIT", key, "waiter", "0"]);
    await waitFor(async () => infoObject(await holder.sendCommand(["LOCK.INFO", key])).blocked === 1, "the WAIT to block");
    // The holder's client is not held up by the other connection's blocked WAIT.
    assert.equal(await holder.ping(), "PONG");
    assert.equal(await holder.sendCommand(["LOCK.UNLOCK", key, "holder", String(token), "FAILURE", "REASON", "x"]), 1);
    const [kind, granted] = await waiting;
    assert.equal(kind, "ACQUIRED");
    assert.ok(granted > token);
  });

  test(`whole operations on the pool's isolated clients, RESP${RESP}`, async () => {
    const key = `nr:pool:${RESP}`;
    const pool = await pooled(server, { RESP }, { minimum: 1, maximum: 4 });
    const ran = [];
    // Each node takes one client for its whole operation (WAIT, work, UNLOCK), as baton binds the
    // lock to the connection that was told ACQUIRED.
    const node = (name) =>
      pool.execute(async (client) => {
        const reply = await client.sendCommand(["LOCK.WAIT", key, name, "10000", "PX", "10000"]);
        if (reply[0] !== "ACQUIRED") return reply;
        ran.push(name);
        await waitFor(async () => infoObject(await client.sendCommand(["LOCK.INFO", key])).blocked === 3, "3 blocked");
        await client.sendCommand(["LOCK.UNLOCK", key, name, String(reply[1]), "SUCCESS", "RESULT", `by-${name}`]);
        return ["RAN"];
      });
    const outcomes = await Promise.all(["p0", "p1", "p2", "p3"].map(node));
    assert.equal(ran.length, 1, JSON.stringify(outcomes));
    const winner = ran[0];
    const others = outcomes.filter((outcome) => outcome[0] !== "RAN");
    assert.deepEqual(others, Array(3).fill(["DONE", winner, `by-${winner}`]));
  });
}

test("AUTH with requirepass, RESP2 and RESP3", async () => {
  const secured = await startServer("--requirepass", "nr secret");
  for (const RESP of PROTOCOLS) {
    const good = await connected(secured, { RESP, password: "nr secret" });
    assert.equal((await good.sendCommand(["LOCK.TRY", `nr:auth:${RESP}`, "a"]))[0], "ACQUIRED");
    const named = await connected(secured, { RESP, username: "default", password: "nr secret" });
    assert.equal(await named.ping(), "PONG");
    await assert.rejects(connected(secured, { RESP, password: "nope", socket: { host: "127.0.0.1", port: secured.port, reconnectStrategy: false } }), /WRONGPASS/);
  }
});
