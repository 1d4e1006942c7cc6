// ioredis's Cluster against a three-node baton cluster, through leader kills: the real binary, one
// process per node with a --dir of its own, on free loopback ports. The leader is found as a
// client finds it (CLUSTER NODES: its `master` line), SIGKILLed and restarted later on its dir.
//
// The settings that matter (docs/cluster.md, *Clients*): every node as a startup node; ioredis
// retries a command whose connection closed (retryDelayOnFailover) or that got CLUSTERDOWN
// (retryDelayOnClusterDown), refreshing the slot map, but at most maxRedirections times in all,
// which an election (1-2 s) can outlast; the application then retries the call itself, by owner,
// which is safe for every lock command. ioredis does not know which argument of LOCK.* is the key,
// so it sends them to any node and follows the -MOVED to the leader.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, openSync, closeSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import net from "node:net";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import Redis from "ioredis";
import { BATON, infoObject, waitFor } from "./server.mjs";

const PATIENCE_MS = 30_000;
const WAIT_SLICE_MS = 1000;
const LEASE_MS = 3000;

// Cluster nodes need their ports named in advance. They come from below Linux's ephemeral range
// (32768 and up), so no server that another test starts on port 0 meanwhile takes one between
// this choice and the node's bind (a node whose port is taken exits at once).
async function unusedPorts(count) {
  const ports = [];
  while (ports.length < count) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    const free = await new Promise((resolve) => {
      const probe = net.createServer();
      probe.once("error", () => resolve(false));
      probe.listen(port, "127.0.0.1", () => probe.close(() => resolve(true)));
    });
    if (free && !ports.includes(port)) ports.push(port);
  }
  return ports;
}

class BatonCluster {
  constructor(size = 3) {
    this.dir = mkdtempSync(path.join(tmpdir(), "baton-node-cluster-"));
    this.ports = new Map();
    this.procs = new Map();
    this.size = size;
  }

  async start() {
    const peers = [];
    const ports = await unusedPorts(2 * this.size);
    for (let node = 1; node <= this.size; node++) {
      const [client, bus] = ports.slice(2 * node - 2, 2 * node);
      this.ports.set(node, client);
      peers.push(`${node}@127.0.0.1:${client}@${bus}`);
    }
    this.peers = peers.join(",");
    for (const node of this.ports.keys()) this.launch(node);
    await this.leader();
  }

  launch(node) {
    assert.ok(!this.procs.has(node), `node ${node} runs already`);
    const log = openSync(path.join(this.dir, `n${node}.log`), "a");
    const argv = ["--bind", "127.0.0.1", "--port", String(this.ports.get(node)), "--dir", path.join(this.dir, `n${node}`)];
    argv.push("--cluster-node-id", String(node), "--cluster-peers", this.peers);
    const proc = spawn(BATON, argv, { stdio: ["ignore", log, log] });
    closeSync(log);
    const exited = new Promise((resolve) => proc.once("exit", resolve));
    this.procs.set(node, { proc, exited });
  }

  async kill(node) {
    const { proc, exited } = this.procs.get(node);
    this.procs.delete(node);
    proc.kill("SIGKILL");
    await exited;
  }

  async stop() {
    const running = [...this.procs.values()];
    this.procs.clear();
    for (const { proc } of running) proc.kill("SIGTERM");
    await Promise.all(running.map(({ exited }) => exited));
    rmSync(this.dir, { recursive: true, force: true });
  }

  startupNodes() {
    return [...this.ports.values()].map((port) => ({ host: "127.0.0.1", port }));
  }

  logs() {
    return [...this.ports.keys()].map((n) => `\n--- n${n}.log:\n${readFileSync(path.join(this.dir, `n${n}.log`), "utf8")}`).join("");
  }

  async ask(node, ...command) {
    const plain = new Redis({ port: this.ports.get(node), lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0, connectTimeout: 1000, commandTimeout: 2000 });
    plain.on("error", () => {});
    try {
      await plain.connect();
      return await plain.call(...command);
    } catch {
      return null;
    } finally {
      plain.disconnect();
    }
  }

  async servingLeader() {
    for (const node of this.procs.keys()) {
      const nodes = await this.ask(node, "CLUSTER", "NODES");
      for (const line of (nodes ?? "").split("\n").filter(Boolean)) {
        const fields = line.split(" ");
        if (!fields[2].split(",").includes("master")) continue;
        const port = Number(fields[1].split("@")[0].split(":").pop());
        const leader = [...this.ports].find(([n, p]) => p === port && this.procs.has(n))?.[0];
        // Elected is not yet serving: the new leader loads the committed state first.
        if (leader !== undefined && (await this.ask(leader, "LOCK.INFO", "leader-probe")) !== null) return leader;
      }
    }
    return null;
  }

  async leader() {
    let leader = null;
    await waitFor(async () => (leader = await this.servingLeader()) !== null, "a serving leader", PATIENCE_MS);
    return leader;
  }
}

const clusters = [];
const clients = [];
async function startCluster() {
  const cluster = new BatonCluster();
  clusters.push(cluster);
  await cluster.start();
  return cluster;
}
after(async () => {
  for (const client of clients) client.disconnect();
  await Promise.all(clusters.map((cluster) => cluster.stop()));
});

/** A Cluster client with the settings docs/cluster.md recommends for failover. */
function clusterClient(startupNodes, redisOptions = {}) {
  const client = new Redis.Cluster(startupNodes, {
    redisOptions: { connectTimeout: 1000, ...redisOptions },
    retryDelayOnFailover: 200,
    retryDelayOnClusterDown: 200,
  });
  client.on("error", () => {}); // failovers are seen through the commands' errors
  clients.push(client);
  return client;
}

/** Sends a lock command until it gets through a failover; resolves to {sent, reply}. A retry by
 *  the same owner is safe; reply errors other than CLUSTERDOWN are the command's answer. */
async function byOwner(call, deadline) {
  for (;;) {
    const sent = Date.now();
    try {
      return { sent, reply: await call() };
    } catch (err) {
      if (err instanceof Redis.ReplyError && !err.message.startsWith("CLUSTERDOWN")) throw err;
      if (Date.now() > deadline) throw err;
      await sleep(100);
    }
  }
}

for (const protocol of [2, 3]) {
  test(`a Cluster seeded with a follower follows MOVED, RESP${protocol}`, async () => {
    const cluster = await startCluster();
    const leader = await cluster.leader();
    const follower = [...cluster.ports.keys()].find((n) => n !== leader);
    const client = clusterClient([{ host: "127.0.0.1", port: cluster.ports.get(follower) }], { protocol });
    const [kind, token] = await client.call("LOCK.TRY", "io:basic", "owner-a", "PX", 60_000);
    assert.equal(kind, "ACQUIRED");
    assert.ok(Number.isSafeInteger(token) && token > 0, String(token));
    const info = infoObject(await client.call("LOCK.INFO", "io:basic"));
    assert.deepEqual([info.state, info.holder, info.token], ["held", "owner-a", token]);
    assert.equal(await client.call("LOCK.UNLOCK", "io:basic", "owner-a", token, "SUCCESS", "RESULT", "built", "KEEP", 60_000), 0); // waiters told
    assert.deepEqual(await client.call("LOCK.TRY", "io:basic", "owner-b"), ["DONE", "owner-a", "built"]);
    await cluster.stop();
  });
}

/** examples/once.cjs's protocol with a Cluster client: WAIT in slices, work with EXTEND every
 *  lease/3, UNLOCK SUCCESS with KEEP. A holder stops working when its lease may have run out (its
 *  last successful grant or EXTEND was sent more than a lease ago) and asks again by owner. */
async function doOnce(client, key, owner, log, steps, deadline) {
  const step = 100;
  for (;;) {
    let { sent, reply } = await byOwner(() => client.call("LOCK.WAIT", key, owner, WAIT_SLICE_MS, "PX", LEASE_MS), deadline);
    if (reply === null) continue;
    if (reply[0] === "DONE") return { finisher: reply[1], result: reply[2] };
    assert.equal(reply[0], "ACQUIRED", JSON.stringify(reply));
    const token = reply[1];
    // The server's lease started no earlier than this WAIT was sent (a re-attach restarts it).
    let validUntil = sent + LEASE_MS;
    let nextExtend = sent + LEASE_MS / 3;
    const attempt = { owner, token, start: Date.now(), end: 0, completed: false };
    log.attempts.push(attempt);
    let lost = false;
    for (let done = 0; done < steps && !lost; ) {
      if (Date.now() >= nextExtend) {
        try {
          ({ sent } = await byOwner(() => client.call("LOCK.EXTEND", key, owner, token, LEASE_MS), deadline));
        } catch (err) {
          if (!(err instanceof Redis.ReplyError)) throw err;
          lost = true; // NOTHOLDER / NOLOCK: the lease ran out
          continue;
        }
        validUntil = sent + LEASE_MS;
        nextExtend = sent + LEASE_MS / 3;
      }
      if (Date.now() + step >= validUntil) {
        lost = true; // a failover outlasted the lease: this holder may no longer hold
        continue;
      }
      await sleep(step);
      done++;
      attempt.end = Date.now();
    }
    if (lost) continue; // ask again by owner: re-attaches if still the holder, else queues
    const result = `built-by-${owner}`;
    try {
      await byOwner(() => client.call("LOCK.UNLOCK", key, owner, token, "SUCCESS", "RESULT", result, "KEEP", 600_000), deadline);
    } catch (err) {
      if (!(err instanceof Redis.ReplyError)) throw err;
      continue; // the lock was lost meanwhile; someone else redoes the work
    }
    attempt.completed = true;
    log.successAt ??= Date.now();
    return { finisher: owner, result };
  }
}

async function runRound(cluster, keys, workers) {
  const logs = new Map(keys.map((key) => [key, { attempts: [], successAt: null, outcomes: new Map() }]));
  const deadline = Date.now() + 4 * PATIENCE_MS;
  const running = Array.from({ length: workers }, async (_, index) => {
    const owner = `w${index}`;
    const client = clusterClient(cluster.startupNodes());
    const order = [...keys.slice(index % keys.length), ...keys.slice(0, index % keys.length)];
    for (const key of order) logs.get(key).outcomes.set(owner, await doOnce(client, key, owner, logs.get(key), 10, deadline));
    client.disconnect();
  });
  await waitFor(() => [...logs.values()].filter((log) => log.attempts.length > 0).length >= Math.min(2, keys.length), "work under way", PATIENCE_MS);
  const killed = await cluster.leader();
  await cluster.kill(killed);
  await Promise.all(running);
  return { logs, killed };
}

async function assertDoneOnce(cluster, logs, workers) {
  for (const [key, log] of logs) {
    const attempts = [...log.attempts].sort((a, b) => a.start - b.start);
    for (let i = 1; i < attempts.length; i++) {
      // Never two holders at once; tokens never go back.
      assert.ok(attempts[i - 1].end <= attempts[i].start, `${key}: overlapping work ${JSON.stringify(attempts)}`);
      assert.ok(attempts[i - 1].token <= attempts[i].token, `${key}: tokens went back ${JSON.stringify(attempts)}`);
    }
    assert.ok(attempts.every((a) => a.start <= log.successAt), `${key}: work after the success ${JSON.stringify(attempts)}`);
    const completed = attempts.filter((a) => a.completed).map((a) => a.owner);
    const finishers = new Set([...log.outcomes.values()].map((o) => o.finisher));
    assert.equal(log.outcomes.size, workers, key);
    assert.equal(finishers.size, 1, `${key}: ${JSON.stringify([...log.outcomes])}`);
    const [finisher] = finishers;
    assert.ok(completed.includes(finisher), `${key}: ${finisher} did not complete the work`);
    const info = infoObject(await cluster.ask(await cluster.leader(), "LOCK.INFO", key));
    assert.deepEqual([info.state, info.finisher], ["done", finisher]);
  }
}

test("the once recipe through leader kills", async () => {
  const cluster = await startCluster();
  const workers = 4;
  try {
    // Round 1: the leader dies while keys are being worked on.
    let { logs, killed } = await runRound(cluster, ["io:once:a", "io:once:b", "io:once:c"], workers);
    await assertDoneOnce(cluster, logs, workers);
    // The killed node rejoins on its dir; then the next leader dies mid-work too.
    cluster.launch(killed);
    ({ logs } = await runRound(cluster, ["io:once:d", "io:once:e"], workers));
    await assertDoneOnce(cluster, logs, workers);
  } catch (err) {
    err.message += cluster.logs();
    throw err;
  }
});
