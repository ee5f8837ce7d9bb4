// `npm start`: the whole product on its embedded default, on this machine, with no network.
//
// 1. builds bursora-server (release) if needed and starts it on SQLite in .bursora/server
//    (BURSORA_LISTEN, default 127.0.0.1:8787; the admin key is kept in .bursora/admin-key);
// 2. creates a demo project, a project key and budgets through the API;
// 3. runs demo agents through the real `openai` client in server mode against a local
//    OpenAI-compatible simulator: real spend, per-tenant counters, and a runaway agent that its
//    budget stops before dispatch;
// 4. prints the dashboard URL and the key to sign in with, and keeps serving until Ctrl-C
//    (`npm start -- --once` stops after the demo, as the tests do).

import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import OpenAI from 'openai';
import { createBursora, withTags, BudgetExceededError } from '../dist/index.mjs';
import { startSim } from '../tests/support/openai-sim.mjs';

const ROOT = new URL('..', import.meta.url).pathname;
const once = process.argv.includes('--once');
const home = process.env.BURSORA_HOME ?? join(ROOT, '.bursora');
const listen = process.env.BURSORA_LISTEN ?? '127.0.0.1:8787';
const url = `http://${listen}`;
const say = (line = '') => process.stdout.write(`${line}\n`);
const usd = (n) => `$${Number(n).toFixed(6)}`;

// 1. The server.
let bin = process.env.BURSORA_SERVER_BIN;
if (!bin) {
  say('building bursora-server (cargo build --release; a few minutes the first time) ...');
  execFileSync('cargo', ['build', '--release', '-q', '-p', 'bursora-server', '--locked'], { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
  bin = join(ROOT, 'target', 'release', 'bursora-server');
}
mkdirSync(join(home, 'server'), { recursive: true });
const keyFile = join(home, 'admin-key');
if (!existsSync(keyFile)) writeFileSync(keyFile, `bsa_${randomBytes(24).toString('hex')}\n`, { mode: 0o600 });
const adminKey = readFileSync(keyFile, 'utf8').trim();

const server = spawn(bin, ['serve', '--data-dir', join(home, 'server'), '--listen', listen], {
  stdio: ['ignore', 'ignore', 'pipe'],
  env: { ...process.env, BURSORA_ADMIN_KEY: adminKey, RUST_LOG: process.env.RUST_LOG ?? 'warn' },
});
let serverLog = '';
server.stderr.on('data', (d) => (serverLog = (serverLog + d).slice(-10_000)));
const serverExited = new Promise((r) => server.once('exit', r));
const stopServer = async () => {
  if (server.exitCode === null) server.kill('SIGTERM');
  await serverExited;
};
for (let i = 0; ; i++) {
  if (server.exitCode !== null) {
    process.stderr.write(`bursora-server did not start:\n${serverLog}\n`);
    if (/in use|AddrInUse/i.test(serverLog)) process.stderr.write(`${listen} is taken: run with BURSORA_LISTEN=127.0.0.1:<free port>\n`);
    process.exit(1);
  }
  try {
    if ((await fetch(`${url}/healthz`)).ok) break;
  } catch {
    // not up yet
  }
  if (i > 600) {
    await stopServer();
    process.stderr.write(`bursora-server did not answer on ${url}\n${serverLog}\n`);
    process.exit(1);
  }
  await new Promise((r) => setTimeout(r, 50));
}

async function api(method, path, body) {
  const r = await fetch(`${url}${path}`, {
    method,
    headers: { authorization: `Bearer ${adminKey}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  if (!r.ok) throw new Error(`${method} ${path}: HTTP ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

// 2. The demo project, its key and budgets (idempotent: budgets are upserted by name).
const projects = (await api('GET', '/v1/projects')).projects ?? [];
const project = projects.find((p) => p.name === 'demo') ?? (await api('POST', '/v1/projects', { name: 'demo' }));
const { key } = await api('POST', `/v1/projects/${project.id}/keys`, { name: `npm start ${new Date().toISOString()}` });
const budgets = [
  { name: 'runaway-agent daily', match: { agent: 'runaway-agent' }, limit_usd: 0.05, window: 'day' },
  { name: 'per-tenant daily', match: { tenant_id: '*' }, limit_usd: 0.2, window: 'day' },
  { name: 'project monthly', limit_usd: 25, window: 'month', mode: 'notify' },
];
for (const b of budgets) await api('POST', `/v1/budgets?project=${project.id}`, b);

// 3. Demo agents in server mode, against the local simulator.
const sim = await startSim({ completionTokens: 600 });
const bursora = createBursora({ endpoint: url, apiKey: key, onWarning: (w) => process.stderr.write(`warning: ${w.message}\n`) });
const openai = bursora.wrap(new OpenAI({ apiKey: 'sk-demo', baseURL: sim.baseURL, maxRetries: 0 }));

say(`\nBursora: bursora-server on ${url} (SQLite in ${join(home, 'server')}), demo project "${project.name}" (${project.id})\n`);
for (const [tenant, n] of [['acme', 4], ['globex', 3], ['initech', 2]]) {
  await withTags({ tenant_id: tenant, agent_id: 'support-bot' }, async () => {
    for (let i = 0; i < n; i++) {
      await openai.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: `Summarise ticket ${i} for ${tenant}.` }], max_completion_tokens: 800 });
    }
  });
  say(`  support-bot answered ${n} tickets for tenant ${tenant}`);
}

const messages = [
  { role: 'system', content: 'You are an agent. Fix the failing build. Keep trying until it passes.' },
  { role: 'user', content: 'The build fails with: error TS2322 in src/index.ts. Fix it.' },
];
let attempt = 0;
let stoppedBy;
await withTags({ tenant_id: 'acme', agent: 'runaway-agent' }, async () => {
  for (;;) {
    attempt++;
    try {
      const r = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages, max_completion_tokens: 4000 });
      messages.push(r.choices[0].message, { role: 'user', content: 'Still failing with the same error. Try again.' });
    } catch (err) {
      if (!(err instanceof BudgetExceededError)) throw err;
      stoppedBy = err;
      break;
    }
  }
});
say(`  runaway-agent: attempt ${attempt} refused before dispatch — ${stoppedBy.message}\n`);
await bursora.shutdown();
await sim.close();

const spend = (await api('GET', `/v1/spend?project=${project.id}`)).budgets;
say('| budget | window | spent | reserved | limit |');
say('|---|---|---:|---:|---:|');
for (const b of spend) say(`| ${b.name}${b.key ? ` (${b.key})` : ''} | ${b.window} | ${usd(b.spent_usd)} | ${usd(b.reserved_usd)} | ${usd(b.limit_usd)} |`);

// 4. Where to look.
say(`\nDashboard: ${url}/dashboard/`);
say(`Sign in with the demo project key: ${key}`);
say(`(the admin key is in ${keyFile})`);
if (once) {
  await stopServer();
} else {
  say('\nbursora-server keeps running; Ctrl-C stops it.');
  const stop = async () => {
    await stopServer();
    process.exit(0);
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  await serverExited;
}
