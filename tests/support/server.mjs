// bursora-server for the SDK's server-mode tests: the real binary (built by cargo, debug
// profile), on a free loopback port, over SQLite in a temp dir or over the Postgres that
// scripts/pg-test.sh started (BURSORA_TEST_DATABASE_URL). Also admin helpers over its HTTP API
// and a "hung" server that accepts connections and never answers.

import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

const ROOT = new URL('../../', import.meta.url).pathname;
const BIN = join(ROOT, 'target', 'debug', 'bursora-server');
export const DATABASE_URL = process.env.BURSORA_TEST_DATABASE_URL || undefined;

let built = false;
/** Builds the server binary once per test process (a no-op when cargo finds it fresh). */
export function serverBinary() {
  if (!built) {
    execFileSync('cargo', ['build', '-q', '-p', 'bursora-server', '--locked'], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
    built = true;
  }
  if (!existsSync(BIN)) throw new Error(`bursora-server was not built at ${BIN}`);
  return BIN;
}

/** A TCP port nothing listens on right now. */
export async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export const ADMIN_KEY = `bsa_test_${randomBytes(24).toString('hex')}`;

/**
 * Starts one replica. `store`: 'sqlite' (a temp data dir, or `dataDir` to share one) or
 * 'postgres' (needs BURSORA_TEST_DATABASE_URL). Resolves once /healthz answers.
 */
export async function startServer({ store = 'sqlite', dataDir, port, sweepMs = 200 } = {}) {
  const bin = serverBinary();
  port ??= await freePort();
  let ownDir;
  const args = ['serve', '--listen', `127.0.0.1:${port}`, '--admin-key', ADMIN_KEY, '--sweep-every-ms', String(sweepMs)];
  if (store === 'postgres') {
    if (!DATABASE_URL) throw new Error('BURSORA_TEST_DATABASE_URL is not set (run under scripts/pg-test.sh)');
    args.push('--database-url', DATABASE_URL, '--max-connections', '8');
  } else {
    if (dataDir === undefined) dataDir = ownDir = mkdtempSync(join(tmpdir(), 'bursora-srv-'));
    args.push('--data-dir', dataDir);
  }
  const child = spawn(bin, args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, RUST_LOG: 'warn' } });
  let log = '';
  child.stderr.on('data', (d) => {
    log = (log + d).slice(-20_000);
  });
  const url = `http://127.0.0.1:${port}`;
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`bursora-server exited early (${child.exitCode}):\n${log}`);
    try {
      const r = await fetch(`${url}/healthz`);
      if (r.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`bursora-server did not come up on ${url}:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url,
    port,
    dataDir,
    store,
    child,
    exited,
    log: () => log,
    /** SIGTERM and wait (graceful: drains in-flight requests). */
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
      if (ownDir) rmSync(ownDir, { recursive: true, force: true });
    },
    /** kill -9: no draining, no goodbye. */
    async kill9() {
      child.kill('SIGKILL');
      await exited;
    },
  };
}

/** Admin calls over the API. */
export function adminApi(url, key = ADMIN_KEY) {
  const call = async (method, path, body) => {
    const r = await fetch(`${url}${path}`, {
      method,
      headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    const json = text ? JSON.parse(text) : null;
    if (!r.ok) throw new Error(`${method} ${path}: HTTP ${r.status} ${text}`);
    return json;
  };
  return {
    call,
    /** A new project with one project key: `{ project, key }`. */
    async project(name = `p-${randomBytes(4).toString('hex')}`) {
      const project = await call('POST', '/v1/projects', { name });
      const key = await call('POST', `/v1/projects/${project.id}/keys`, { name: 'sdk' });
      return { project: project.id, key: key.key };
    },
    budget(project, spec) {
      return call('POST', `/v1/budgets?project=${project}`, spec);
    },
    async spend(project) {
      return (await call('GET', `/v1/spend?project=${project}`)).budgets;
    },
  };
}

/** A server that accepts TCP connections and never answers a byte. */
export async function startHungServer() {
  const sockets = new Set();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    accepted: () => sockets.size,
    close: () =>
      new Promise((r) => {
        for (const s of sockets) s.destroy();
        server.close(r);
      }),
  };
}
