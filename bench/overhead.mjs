// Per-call overhead of a Bursora-wrapped OpenAI client against the bare client, in the same run.
//
//   npm run bench            (ROUNDS=10 PER_ROUND=2000 WARMUP=3000 BENCH_OPENAI=7 npm run bench
//                             to change the counts or measure the openai 7 client)
//
// The client's `fetch` answers in-process with a canned JSON body or a canned SSE body, so the
// numbers are the client + Bursora, no network. Bare and wrapped calls alternate, so drift
// (GC, JIT, CPU frequency) falls on both alike. "Added" is wrapped minus bare at the same
// percentile, per round, the median over rounds. Prints a Markdown table.

import os from 'node:os';
import v8 from 'node:v8';
import vm from 'node:vm';
import { createBursora } from '../dist/index.mjs';

// BENCH_OPENAI=7 measures the openai 7 client (installed as `openai-v7`) instead of 6.
const OPENAI_PKG = process.env.BENCH_OPENAI === '7' ? 'openai-v7' : 'openai';
const { default: OpenAI } = await import(OPENAI_PKG);
const { VERSION: OPENAI_VERSION } = await import(`${OPENAI_PKG}/version`);

const ROUNDS = Number(process.env.ROUNDS ?? 10);
const PER_ROUND = Number(process.env.PER_ROUND ?? 2_000);
const ITERATIONS = ROUNDS * PER_ROUND;
const WARMUP = Number(process.env.WARMUP ?? 3_000);

// A forced GC between rounds and before reading memory (node needs --expose-gc; set it here so
// `node bench/overhead.mjs` is enough).
v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc');
const TARGET_P50_US = 10;
const TARGET_P99_US = 50;

const MODEL = 'gpt-4o-mini';
const request = {
  model: MODEL,
  messages: [
    { role: 'system', content: 'You are a helpful assistant that answers briefly.' },
    { role: 'user', content: 'What is the capital of France? Answer in one word.' },
  ],
  max_completion_tokens: 64,
};
const usage = { prompt_tokens: 31, completion_tokens: 2, total_tokens: 33, prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 }, completion_tokens_details: { reasoning_tokens: 0, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 } };
const jsonBody = JSON.stringify({
  id: 'chatcmpl-bench',
  object: 'chat.completion',
  created: 1760000000,
  model: MODEL,
  choices: [{ index: 0, message: { role: 'assistant', content: 'Paris.', refusal: null, annotations: [] }, logprobs: null, finish_reason: 'stop' }],
  usage,
  service_tier: 'default',
  system_fingerprint: 'fp_bench',
});
const chunk = (extra) => `data: ${JSON.stringify({ id: 'chatcmpl-bench', object: 'chat.completion.chunk', created: 1760000000, model: MODEL, service_tier: 'default', system_fingerprint: 'fp_bench', ...extra })}\n\n`;
const sseChunks = [
  chunk({ choices: [{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }] }),
  chunk({ choices: [{ index: 0, delta: { content: 'Par' }, logprobs: null, finish_reason: null }] }),
  chunk({ choices: [{ index: 0, delta: { content: 'is.' }, logprobs: null, finish_reason: null }] }),
  chunk({ choices: [{ index: 0, delta: {}, logprobs: null, finish_reason: 'stop' }] }),
];
const sseBody = sseChunks.join('') + 'data: [DONE]\n\n';
const sseBodyWithUsage = sseChunks.join('') + chunk({ choices: [], usage }) + 'data: [DONE]\n\n';

// The canned provider: one Response per call, like a real fetch. A stream asking for usage
// gets the usage chunk, as OpenAI does.
async function cannedFetch(_url, init) {
  const body = typeof init?.body === 'string' ? init.body : '';
  if (body.includes('"stream":true')) {
    const text = body.includes('"include_usage":true') ? sseBodyWithUsage : sseBody;
    return new Response(text, { status: 200, headers: { 'content-type': 'text/event-stream' } });
  }
  return new Response(jsonBody, { status: 200, headers: { 'content-type': 'application/json', 'x-request-id': 'req_bench' } });
}

const makeClient = () => new OpenAI({ apiKey: 'sk-bench', baseURL: 'http://bench.invalid/v1', fetch: cannedFetch, maxRetries: 0 });
const bare = makeClient();
const bursora = createBursora({
  budgets: [
    { name: 'bench-total', limitUsd: 1_000_000, window: 'total' },
    { name: 'bench-per-agent', match: { agent: '*' }, limitUsd: 1_000_000, window: 'day' },
  ],
  tags: { agent: 'bench' },
});
const wrapped = bursora.wrap(makeClient());

const scenarios = {
  'chat, non-stream': async (client) => {
    const r = await client.chat.completions.create(request);
    if (r.choices[0].message.content !== 'Paris.') throw new Error('bad response');
  },
  'chat, stream': async (client) => {
    const s = await client.chat.completions.create({ ...request, stream: true });
    let text = '';
    for await (const c of s) text += c.choices[0]?.delta?.content ?? '';
    if (text !== 'Paris.') throw new Error('bad stream');
  },
};

const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

// One round: PER_ROUND calls of each client, alternating, after a forced GC so a collection
// owed by the previous round does not land here. Returns percentiles in µs.
async function round(run) {
  const bareNs = new Float64Array(PER_ROUND);
  const wrappedNs = new Float64Array(PER_ROUND);
  gc();
  for (let i = 0; i < PER_ROUND; i++) {
    // Alternate which goes first so neither always runs on a warmer cache.
    const wrappedFirst = (i & 1) === 1;
    let t0 = process.hrtime.bigint();
    await run(wrappedFirst ? wrapped : bare);
    let t1 = process.hrtime.bigint();
    (wrappedFirst ? wrappedNs : bareNs)[i] = Number(t1 - t0);
    t0 = process.hrtime.bigint();
    await run(wrappedFirst ? bare : wrapped);
    t1 = process.hrtime.bigint();
    (wrappedFirst ? bareNs : wrappedNs)[i] = Number(t1 - t0);
  }
  bareNs.sort();
  wrappedNs.sort();
  return {
    bare50: percentile(bareNs, 50) / 1000,
    bare99: percentile(bareNs, 99) / 1000,
    wrapped50: percentile(wrappedNs, 50) / 1000,
    wrapped99: percentile(wrappedNs, 99) / 1000,
  };
}

// The median over rounds of each percentile (and of each round's difference): one noisy round
// (another process on the CPU, a major GC) does not decide the result.
async function warmUp(run) {
  for (let i = 0; i < WARMUP; i++) {
    await run(bare);
    await run(wrapped);
  }
}

async function measure(run) {
  const rounds = [];
  for (let r = 0; r < ROUNDS; r++) rounds.push(await round(run));
  const m = (k) => median(rounds.map((x) => x[k]));
  return {
    bare50: m('bare50'),
    bare99: m('bare99'),
    wrapped50: m('wrapped50'),
    wrapped99: m('wrapped99'),
    added50: median(rounds.map((x) => x.wrapped50 - x.bare50)),
    added99: median(rounds.map((x) => x.wrapped99 - x.bare99)),
  };
}

// Warm every scenario first (JIT, the tokenizer tables the addon loads on first use), so the
// memory figures cover the measured calls only.
for (const run of Object.values(scenarios)) await warmUp(run);
gc();
const memStart = process.memoryUsage();
const results = {};
for (const [name, run] of Object.entries(scenarios)) results[name] = await measure(run);
const flushStart = process.hrtime.bigint();
await bursora.flush();
const flushMs = Number(process.hrtime.bigint() - flushStart) / 1e6;
const spend = await bursora.spend();
gc();
const memEnd = process.memoryUsage();
await bursora.shutdown();

const total = spend.find((b) => b.name === 'bench-total');
const calls = Object.keys(scenarios).length * ITERATIONS;
const f = (x) => x.toFixed(1);
const verdict = (added, target) => (added <= target ? 'ok' : 'OVER');

console.log(`# Bursora per-call overhead (openai ${OPENAI_VERSION} client, in-process fetch)`);
console.log('');
console.log(`node ${process.version}, ${os.cpus()[0]?.model ?? 'cpu'} x${os.cpus().length}, load average ${os.loadavg()[0].toFixed(2)}; per client and scenario ${WARMUP} warm-up + ${ROUNDS} rounds × ${PER_ROUND} measured calls, bare and wrapped alternating; each figure is the median over rounds.`);
console.log('');
console.log('| scenario | bare p50 (µs) | bare p99 (µs) | wrapped p50 (µs) | wrapped p99 (µs) | added p50 (µs) | added p99 (µs) | wrapped ÷ bare p50 / p99 | target added p50 / p99 (µs) |');
console.log('|---|---:|---:|---:|---:|---:|---:|---:|---|');
for (const [name, r] of Object.entries(results)) {
  const a50 = r.added50;
  const a99 = r.added99;
  const ratio = `${(r.wrapped50 / r.bare50).toFixed(2)} / ${(r.wrapped99 / r.bare99).toFixed(2)}`;
  console.log(`| ${name} | ${f(r.bare50)} | ${f(r.bare99)} | ${f(r.wrapped50)} | ${f(r.wrapped99)} | ${f(a50)} | ${f(a99)} | ${ratio} | ≤ ${TARGET_P50_US} (${verdict(a50, TARGET_P50_US)}) / ≤ ${TARGET_P99_US} (${verdict(a99, TARGET_P99_US)}) |`);
}
console.log('');
const mib = (b) => `${b >= 0 ? '+' : ''}${(b / 2 ** 20).toFixed(1)} MiB`;
console.log(`Memory over the measured calls (after warm-up; forced GC at both ends): RSS ${(memStart.rss / 2 ** 20).toFixed(1)} → ${(memEnd.rss / 2 ** 20).toFixed(1)} MiB (${mib(memEnd.rss - memStart.rss)}), JS heap ${mib(memEnd.heapUsed - memStart.heapUsed)}, external ${mib(memEnd.external - memStart.external)}; ${calls} wrapped and ${calls} bare calls.`);
console.log(`Ledger after the run: ${total ? `${total.spentUsd.toFixed(6)} USD spent, ${total.reservedUsd.toFixed(6)} USD reserved` : 'bench-total missing'}; final flush() took ${flushMs.toFixed(2)} ms.`);
