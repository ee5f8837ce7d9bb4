// The README's run command (`npm start`) stays true: it starts bursora-server on SQLite, creates
// the demo project, runs the demo agents in server mode until the runaway one is refused, and
// prints the dashboard URL and the key. Run here with `--once` (it stops after the demo), the
// debug server binary and a temp home.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serverBinary, freePort } from './support/server.mjs';

test('npm start: server, demo spend, a refusal, the dashboard URL and a key', { timeout: 120_000 }, async (t) => {
  const home = mkdtempSync(join(tmpdir(), 'bursora-start-'));
  t.after(() => rmSync(home, { recursive: true, force: true }));
  const port = await freePort();
  const script = new URL('../scripts/start.mjs', import.meta.url).pathname;
  const child = spawn(process.execPath, [script, '--once'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, BURSORA_HOME: home, BURSORA_LISTEN: `127.0.0.1:${port}`, BURSORA_SERVER_BIN: serverBinary(), BURSORA_ENDPOINT: '', BURSORA_API_KEY: '' },
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  const code = await new Promise((r) => child.on('exit', r));
  assert.equal(code, 0, `${out}\n${err}`);
  assert.match(out, new RegExp(`Dashboard: http://127\\.0\\.0\\.1:${port}/dashboard/`));
  assert.match(out, /Sign in with the demo project key: bsk_[0-9a-f]{20,}/);
  assert.match(out, /runaway-agent: attempt \d+ refused before dispatch — budget "runaway-agent daily"/);
  assert.match(out, /\| per-tenant daily \(tenant_id=acme\) \| day \| \$0\.0\d+/);
  const adminKey = readFileSync(join(home, 'admin-key'), 'utf8').trim();
  assert.ok(!out.includes(adminKey), 'the admin key is never printed');
});
