// Time until the dashboard's overview is fully rendered, in headless Chromium, over a month of
// data for 1,000 tenants: the real bursora-server binary (SQLite, temp dir) is seeded through
// `POST /v1/usage` with calls spread over the last 30 days, then the overview is loaded RUNS
// times in a fresh navigation each (HTML, modules, sign-in check, every API call, drawing).
//
//   cargo build -p bursora-server && node bench/dashboard.mjs
//   TENANTS=1000 CALLS=200000 RUNS=7 node bench/dashboard.mjs
//   BURSORA_SERVER_BIN=target/release/bursora-server node bench/dashboard.mjs
//
// "Rendered" is the page's own `bursora:ready` mark, set once every figure, chart and table of
// the page is in the DOM; measured from navigation start. Prints a Markdown table with the
// load average (the machine is shared: read the figure next to it).

import fs from 'node:fs';
import os from 'node:os';
import { randomInt } from 'node:crypto';
import { BIN, launchChromium, startServer } from '../tests/support/bursora-server.mjs';

const TENANTS = Number(process.env.TENANTS ?? 1000);
const CALLS = Number(process.env.CALLS ?? 200_000);
const RUNS = Number(process.env.RUNS ?? 7);
const BATCH = 1000;
const PARALLEL = 2;
const DAY = 86_400_000;
const MODELS = ['gpt-4o-mini', 'gpt-4o', 'gpt-4.1', 'o3-mini', 'gpt-4.1-nano'];

// CPU seconds the server process has used (user + system), from /proc: unlike wall time, this
// barely depends on how busy the shared machine is.
const TICK = 100; // USER_HZ, 100 on Linux
const cpuSeconds = (pid) => {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / TICK;
};
const load = () => os.loadavg().map((l) => l.toFixed(2)).join(' ');
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const ms = (x) => `${Math.round(x)} ms`;

const srv = await startServer();
const api = async (method, p, key, body) => {
  const r = await srv.api(method, p, key, body);
  if (r.status >= 300) throw new Error(`${method} ${p}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
};
let browser;
try {
  const project = (await api('POST', '/v1/projects', srv.admin, { name: 'bench' })).id;
  const key = (await api('POST', `/v1/projects/${project}/keys`, srv.admin, { name: 'bench' })).key;
  for (const b of [
    { name: 'org-monthly', limit_usd: 100_000, window: 'month' },
    { name: 'per-tenant-daily', match: { tenant_id: '*' }, limit_usd: 50, window: 'day', mode: 'notify' },
  ]) {
    await api('POST', `/v1/budgets?project=${project}`, srv.admin, b);
  }

  // A month of calls: tenants skewed (a few big ones, a long tail), times uniform over 30 days.
  const now = Date.now();
  const seedStart = performance.now();
  let next = 0;
  const worker = async () => {
    for (;;) {
      const start = next;
      next += BATCH;
      if (start >= CALLS) return;
      const items = [];
      for (let i = start; i < Math.min(CALLS, start + BATCH); i += 1) {
        const t = Math.floor(TENANTS * Math.random() ** 2);
        items.push({
          id: `bench-call-${i}`,
          tags: { tenant_id: `tenant-${String(t).padStart(4, '0')}`, agent_id: `agent-${i % 12}` },
          provider: 'openai',
          model: MODELS[i % MODELS.length],
          actual_nanos: 10_000 + randomInt(20_000_000),
          at_ms: now - randomInt(30 * DAY),
          input_tokens: 500 + (i % 900),
          output_tokens: 50 + (i % 300),
        });
      }
      await api('POST', '/v1/usage', key, { items });
    }
  };
  await Promise.all(Array.from({ length: PARALLEL }, worker));
  const seedMs = performance.now() - seedStart;

  // The overview's API calls on their own, for context.
  const q = (path) => `${path}${path.includes('?') ? '&' : '?'}project=${project}`;
  const today = Math.floor(now / DAY) * DAY;
  const apiCalls = {
    'series by hour, 24 hours': `/v1/spend/series?bucket=hour&from=${now - DAY}&to=${now}`,
    'series by day and model, 30 days': `/v1/spend/series?bucket=day&group_by=model&from=${today - 29 * DAY}&to=${now}`,
    'breakdown by tag:tenant_id': `/v1/spend/breakdown?group_by=tag:tenant_id&from=${today - 29 * DAY}&to=${now}&limit=5`,
    'events, newest 100': `/v1/events?limit=100`,
    'spend counters': `/v1/spend`,
  };
  const apiTimes = {};
  for (const [name, path] of Object.entries(apiCalls)) {
    const times = [];
    for (let i = 0; i < 5; i += 1) {
      const t0 = performance.now();
      await api('GET', q(path), srv.admin);
      times.push(performance.now() - t0);
    }
    apiTimes[name] = median(times);
  }

  browser = await launchChromium();
  const page = browser.context.pages()[0] ?? (await browser.context.newPage());
  await page.goto(`${srv.base}/dashboard/`);
  await page.getByLabel('API key').fill(srv.admin);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForSelector('main[data-ready="true"]', { timeout: 60_000 });
  const firstMtd = await page.locator('.kpi-value').first().textContent();

  const loadBefore = load();
  const cpuBefore = cpuSeconds(srv.pid);
  const times = [];
  const drawing = [];
  for (let i = 0; i < RUNS; i += 1) {
    await page.reload({ waitUntil: 'commit' }); // sign-in is kept in sessionStorage
    await page.waitForSelector('main[data-ready="true"][data-page="overview"]', { timeout: 60_000 });
    const [data, ready] = await page.evaluate(() =>
      ['bursora:data', 'bursora:ready'].map((m) => performance.getEntriesByName(m).at(-1).startTime),
    );
    times.push(ready);
    drawing.push(ready - data);
  }
  const loadAfter = load();
  const serverCpuMs = ((cpuSeconds(srv.pid) - cpuBefore) * 1000) / RUNS;
  const nodes = await page.evaluate(() => document.querySelectorAll('*').length);
  const chrome = await page.evaluate(() => /Chrome\/([\d.]+)/.exec(navigator.userAgent)?.[1] ?? '?');

  console.log(
    `${BIN} (SQLite) with ${TENANTS} tenants and ${CALLS} calls over 30 days ` +
      `(seeded through POST /v1/usage in ${(seedMs / 1000).toFixed(1)} s); Chromium ${chrome}; ` +
      `${os.cpus().length} cores; month to date shown: ${firstMtd}.`,
  );
  console.log('');
  console.log('| overview, time to fully rendered | median | min | max | runs | load average (1/5/15 min) before → after |');
  console.log('|---|---|---|---|---|---|');
  console.log(
    `| navigation start → bursora:ready | ${ms(median(times))} | ${ms(Math.min(...times))} | ${ms(Math.max(...times))} | ${RUNS} | ${loadBefore} → ${loadAfter} |`,
  );
  console.log(
    `| of which drawing (last answer → ready) | ${ms(median(drawing))} | ${ms(Math.min(...drawing))} | ${ms(Math.max(...drawing))} | ${RUNS} | |`,
  );
  console.log(
    `| server CPU per overview load (user + system, /proc) | ${ms(serverCpuMs)} | | | ${RUNS} | |`,
  );
  console.log('');
  console.log('| API call the overview makes (alone, median of 5) | time |');
  console.log('|---|---|');
  for (const [name, t] of Object.entries(apiTimes)) console.log(`| ${name} | ${ms(t)} |`);
  console.log('');
  console.log(`DOM elements on the rendered overview: ${nodes}.`);
} finally {
  await browser?.close();
  await srv.stop();
}
