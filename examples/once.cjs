#!/usr/bin/env node
// Do an operation once across all nodes, with baton and ioredis.
//
// Every node runs this with the same key and its own node id. One of them runs the command while
// the others wait in baton's queue; when it succeeds they are all told DONE (with its result) and
// skip the work; when it fails the next node in line gets the lock and tries.
//
//     npm install ioredis
//     node examples/once.cjs --port 6390 --key build:42 --node "$(hostname)" -- make image
//
// It prints what it did, one line per step, the last line being the outcome:
// `<node>: SUCCESS result=...` (exit 0), `<node>: DONE finisher=... result=...` (exit 0, work
// skipped), `<node>: FAILURE reason=...` (exit 1), `<node>: LOST ...` (exit 3: the lock was lost
// while working). Connection and usage errors go to stderr with exit 2.
//
// The points that matter with ioredis, whose defaults are used throughout:
// - One connection from LOCK.WAIT to LOCK.UNLOCK (one Redis object, not shared with other work):
//   baton releases the lock as FAILURE when the connection that took it closes.
// - Each LOCK.WAIT blocks for --wait-ms at most and is sent again when it times out: the owner
//   keeps its place in line. ioredis has no read timeout by default; a `commandTimeout` must be
//   longer than --wait-ms, or the WAIT fails on the client while the server keeps it.
// - ioredis's default reconnects (which re-send unanswered commands) are safe here: a re-sent WAIT
//   by the same owner keeps its place (or gets the same token), a re-sent UNLOCK gets the first
//   one's answer, and a lock lost with a dropped connection makes the next EXTEND or UNLOCK answer
//   NOTHOLDER or NOLOCK.
// - While the command runs, LOCK.EXTEND renews the lease every lease/3.
"use strict";

const { spawn } = require("node:child_process");
const { parseArgs } = require("node:util");
const Redis = require("ioredis");

function usage(message) {
  process.stderr.write(
    `${message}\nusage: once.cjs [--host H] [--port P] [--password PW] --key KEY --node NODE ` +
      `[--lease-ms MS] [--wait-ms MS] [--keep-ms MS] -- COMMAND [ARGS...]\n`,
  );
  process.exit(2);
}

function options(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        host: { type: "string", default: "127.0.0.1" },
        port: { type: "string", default: "6390" },
        password: { type: "string", default: process.env.BATON_PASSWORD },
        key: { type: "string" },
        node: { type: "string" },
        "lease-ms": { type: "string", default: "30000" },
        "wait-ms": { type: "string", default: "2000" },
        "keep-ms": { type: "string", default: "600000" },
      },
    });
  } catch (err) {
    usage(err.message);
  }
  const v = parsed.values;
  if (!v.key || !v.node) usage("--key and --node are required");
  if (parsed.positionals.length === 0) usage("the work is missing: add -- and a command");
  return {
    host: v.host,
    port: Number(v.port),
    password: v.password,
    key: v.key,
    node: v.node,
    leaseMs: Number(v["lease-ms"]),
    waitMs: Number(v["wait-ms"]),
    keepMs: Number(v["keep-ms"]),
    command: parsed.positionals,
  };
}

const say = (args, line) => process.stdout.write(`${args.node}: ${line}\n`);

async function waitForTurn(redis, args) {
  for (;;) {
    const reply = await redis.call("LOCK.WAIT", args.key, args.node, args.waitMs, "PX", args.leaseMs);
    if (reply === null) {
      // Timed out: our place in line is kept, ask again.
      say(args, "STILL WAITING");
      continue;
    }
    if (reply[0] === "ACQUIRED") return { acquired: true, token: reply[1] };
    if (reply[0] === "DONE") return { acquired: false, finisher: reply[1], result: reply[2] ?? "" };
    throw new Error(`unexpected LOCK.WAIT reply ${JSON.stringify(reply)}`);
  }
}

// Runs the command while renewing the lease. Resolves to {code, output, reason, lost}.
function runWork(redis, args, token) {
  return new Promise((resolve) => {
    const env = { ...process.env, BATON_KEY: args.key, BATON_NODE: args.node, BATON_TOKEN: String(token) };
    const child = spawn(args.command[0], args.command.slice(1), { stdio: ["inherit", "pipe", "inherit"], env });
    const chunks = [];
    let lost = null;
    let settled = false;
    const finish = (outcome) => {
      if (settled) return;
      settled = true;
      clearInterval(renew);
      resolve(outcome);
    };
    const renew = setInterval(async () => {
      try {
        await redis.call("LOCK.EXTEND", args.key, args.node, token, args.leaseMs);
        say(args, `EXTENDED token=${token} lease_ms=${args.leaseMs}`);
      } catch (err) {
        lost = `LOCK.EXTEND refused, work stopped: ${err.message}`;
        child.kill("SIGKILL");
      }
    }, Math.max(Math.floor(args.leaseMs / 3), 1));
    child.stdout.on("data", (chunk) => chunks.push(chunk));
    child.on("error", (err) => finish({ code: null, reason: `cannot start ${args.command[0]}: ${err.message}` }));
    child.on("close", (code, signal) => {
      const output = Buffer.concat(chunks).toString("utf8").trimEnd();
      const reason = code === 0 ? null : code !== null ? `exit status ${code}` : `terminated (${signal})`;
      finish({ code, output, reason, lost });
    });
  });
}

async function once(args) {
  const redis = new Redis({
    host: args.host,
    port: args.port,
    password: args.password,
    // Connect in connect() below, so that a server that cannot be reached is an error at once.
    lazyConnect: true,
    // Fencing tokens are opaque integers: keep them exact as strings rather than JS numbers.
    stringNumbers: true,
  });
  let lastError = null;
  redis.on("error", (err) => (lastError = err)); // reported with the failing command
  try {
    await redis.connect();
  } catch (err) {
    throw new Error(`cannot connect to ${args.host}:${args.port}: ${(lastError ?? err).message}`);
  }
  try {
    say(args, `WAITING key=${args.key}`);
    const turn = await waitForTurn(redis, args);
    if (!turn.acquired) {
      say(args, `DONE finisher=${turn.finisher} result=${turn.result}`);
      return 0;
    }
    const token = turn.token;
    say(args, `ACQUIRED token=${token}`);
    const work = await runWork(redis, args, token);
    if (work.lost) {
      say(args, `LOST ${work.lost}`);
      return 3;
    }
    try {
      if (work.code === 0) {
        await redis.call("LOCK.UNLOCK", args.key, args.node, token, "SUCCESS", "RESULT", work.output, "KEEP", args.keepMs);
        say(args, `SUCCESS result=${work.output}`);
        return 0;
      }
      await redis.call("LOCK.UNLOCK", args.key, args.node, token, "FAILURE", "REASON", work.reason);
      say(args, `FAILURE reason=${work.reason}`);
      return 1;
    } catch (err) {
      if (!(err instanceof Redis.ReplyError)) throw err;
      // NOTHOLDER / NOLOCK: the lease ran out or the connection was lost; someone else may redo it.
      say(args, `LOST LOCK.UNLOCK refused: ${err.message}`);
      return 3;
    }
  } finally {
    redis.disconnect();
  }
}

const args = options(process.argv.slice(2));
once(args).then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`${args.node}: ERROR ${err.message}\n`);
    process.exit(2);
  },
);
