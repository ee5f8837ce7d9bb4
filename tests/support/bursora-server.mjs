// The real bursora-server binary on a temp SQLite directory, and Debian's Chromium driven by
// playwright-core: shared by tests/dashboard.test.mjs and bench/dashboard.mjs.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CHROMIUM = '/usr/bin/chromium';
// BURSORA_SERVER_BIN picks another build (bench/dashboard.mjs against a release build).
export const BIN = process.env.BURSORA_SERVER_BIN || path.join(ROOT, 'target', 'debug', 'bursora-server');
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];


export async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** The real server binary on a temp data dir; resolves once /healthz answers. */
export async function startServer({ extraArgs = [] } = {}) {
  if (!fs.existsSync(BIN)) {
    throw new Error(`${BIN} is missing: run \`cargo build -p bursora-server\` first`);
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bursora-dash-'));
  const port = await freePort();
  const admin = `bsa_${randomBytes(32).toString('hex')}`;
  const env = { ...process.env, RUST_LOG: 'warn' };
  delete env.BURSORA_DATABASE_URL; // SQLite in the temp dir, whatever the shell has
  delete env.BURSORA_ADMIN_KEY;
  const child = spawn(
    BIN,
    ['serve', '--data-dir', dir, '--listen', `127.0.0.1:${port}`, '--admin-key', admin, '--sweep-every-ms', '200', ...extraArgs],
    { env, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`bursora-server exited: ${stderr}`);
    try {
      if ((await fetch(`${base}/healthz`)).ok) break;
    } catch {}
    if (Date.now() > deadline) throw new Error(`bursora-server never answered: ${stderr}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const api = async (method, p, key, body) => {
    const res = await fetch(base + p, {
      method,
      headers: { authorization: `Bearer ${key}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null, headers: res.headers };
  };
  return {
    base,
    admin,
    api,
    pid: child.pid,
    stderr: () => stderr,
    async stop() {
      child.kill('SIGTERM');
      await new Promise((r) => (child.exitCode !== null ? r() : child.once('exit', r)));
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function launchChromium() {
  const { chromium } = await import('playwright-core');
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'bursora-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1360, height: 900 },
    acceptDownloads: true,
  });
  return {
    context,
    async close() {
      await context.close();
      fs.rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}
