// What the Node client tests share: baton servers on free loopback ports (each with its own
// journal directory, stopped after the test file), and small helpers. The server is
// ../../../target/release/baton or $BATON_BIN.
import { after } from "node:test";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";

const here = path.dirname(fileURLToPath(import.meta.url));
export const BATON = process.env.BATON_BIN ?? path.resolve(here, "../../../target/release/baton");
const servers = [];

function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

async function canConnect(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/** Starts baton with `flags` on a free port; resolves to {port, proc, dir}. */
export async function startServer(...flags) {
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const dir = mkdtempSync(path.join(tmpdir(), "baton-node-"));
    const proc = spawn(BATON, ["--bind", "127.0.0.1", "--port", String(port), "--dir", dir, ...flags], {
      stdio: ["ignore", "ignore", "ignore"],
    });
    let exited = false;
    proc.once("exit", () => (exited = true));
    const deadline = Date.now() + 10_000;
    while (!exited && Date.now() < deadline) {
      if (await canConnect(port)) {
        const server = { port, proc, dir };
        servers.push(server);
        return server;
      }
      await sleep(20);
    }
    proc.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
  throw new Error(`baton (${BATON}) did not start`);
}

after(() => {
  for (const { proc, dir } of servers) {
    proc.once("exit", () => rmSync(dir, { recursive: true, force: true }));
    proc.kill("SIGTERM");
  }
});

export async function waitFor(predicate, message, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${message}`);
    await sleep(10);
  }
}

/** LOCK.INFO as an object, whether the client gave a flat array (RESP2), a Map or an object. */
export function infoObject(reply) {
  if (reply instanceof Map) return Object.fromEntries(reply);
  if (!Array.isArray(reply)) return reply;
  const object = {};
  for (let i = 0; i < reply.length; i += 2) object[reply[i]] = reply[i + 1];
  return object;
}
