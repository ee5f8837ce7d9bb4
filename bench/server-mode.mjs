// Server mode: what a wrapped call costs against the bare client, in the same run, with
// bursora-server up (loopback, SQLite), stopped (connection refused) and hung (accepts, never
// answers). Down and hung are measured after the first failure: the circuit is open and calls go
// out fail-open without waiting on the server (issue #4: "≤ 1 ms added after the first failure").
//
//   npm run bench:server          (N=2000 to change the count per scenario)
//
// The provider is the client's `fetch`, answering in-process, so the numbers are client +
// Bursora (+ the reservation round trip when the server is up). Prints a Markdown table.

import os from 'node:os';
import OpenAI from 'openai';
import { VERSION as OPENAI_VERSION } from 'openai/version';
import { createBursora } from '../dist/index.mjs';
import { startServer, startHungServer, adminApi, freePort } from '../tests/support/server.mjs';

const N = Number(process.env.N ?? 2000);
const WARMUP = 200;
const MODEL = 'gpt-4o-mini';
const request = {
  model: MODEL,
  messages: [{ role: 'user', content: 'What is the capital of France? Answer in one word.' }],
  max_completion_tokens: 64,
};
const body = JSON.stringify({
  id: 'chatcmpl-bench', object: 'chat.completion', created: 1760000000, model: MODEL,
  choices: [{ index: 0, message: { role: 'assistant', content: 'Paris.', refusal: null }, finish_reason: 'stop', logprobs: null }],
  usage: { prompt_tokens: 20, completion_tokens: 2, total_tokens: 22 },
});
const cannedFetch = async () => new Response(body, { status: 200, headers: { 'content-type': 'application/json' } });
const makeClient = () => new OpenAI({ apiKey: 'sk-bench', baseURL: 'http://bench.invalid/v1', fetch: cannedFetch, maxRetries: 0 });

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const us = (ms) => `${(ms * 1000).toFixed(1)} µs`;

async function measure(name, bursora, target) {
  const bare = makeClient();
  const wrapped = bursora.wrap(makeClient());
  const t0 = performance.now();
  await wrapped.chat.completions.create(request);
  const first = performance.now() - t0;
  for (let i = 0; i < WARMUP; i++) {
    await bare.chat.completions.create(request);
    await wrapped.chat.completions.create(request);
  }
  const b = [];
  const w = [];
  for (let i = 0; i < N; i++) {
    let t = performance.now();
    await bare.chat.completions.create(request);
    b.push(performance.now() - t);
    t = performance.now();
    await wrapped.chat.completions.create(request);
    w.push(performance.now() - t);
  }
  await bursora.shutdown();
  const added50 = pct(w, 50) - pct(b, 50);
  const added99 = pct(w, 99) - pct(b, 99);
  return { name, first, bare50: pct(b, 50), wrapped50: pct(w, 50), added50, added99, target, met: target === undefined ? '–' : added50 <= target ? 'met' : 'missed' };
}

const rows = [];
const server = await startServer();
try {
  const admin = adminApi(server.url);
  const { project, key } = await admin.project();
  await admin.budget(project, { name: 'bench', limit_usd: 1_000_000, window: 'day' });
  rows.push(await measure('server up (loopback reserve round trip)', createBursora({ endpoint: server.url, apiKey: key, onWarning: () => {} })));
} finally {
  await server.stop();
}
const down = `http://127.0.0.1:${await freePort()}`;
rows.push(await measure('server stopped, fail-open, after the first failure', createBursora({ endpoint: down, apiKey: 'bsk_bench', onWarning: () => {} }), 1));
const hung = await startHungServer();
try {
  rows.push(await measure('server hung, fail-open (timeout 200 ms), after the first failure', createBursora({ endpoint: hung.url, apiKey: 'bsk_bench', decisionTimeoutMs: 200, onWarning: () => {} }), 1));
} finally {
  await hung.close();
}

console.log(`\nServer mode, openai ${OPENAI_VERSION}, ${N} alternating bare/wrapped calls per row; node ${process.version}; ${os.cpus().length} CPUs; load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}\n`);
console.log('| scenario | first call | bare p50 | wrapped p50 | added p50 | added p99 | target (added p50) |');
console.log('|---|---:|---:|---:|---:|---:|---|');
for (const r of rows) {
  console.log(`| ${r.name} | ${(r.first).toFixed(2)} ms | ${us(r.bare50)} | ${us(r.wrapped50)} | ${us(r.added50)} | ${us(r.added99)} | ${r.target === undefined ? '–' : `≤ ${r.target} ms: ${r.met}`} |`);
}
