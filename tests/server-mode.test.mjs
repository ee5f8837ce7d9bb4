// Server mode end to end: the real openai client, wrapped in server mode, against a local OpenAI
// simulator and the real bursora-server binary (SQLite store). Refusals before dispatch, exact
// settlement, streams, fail-open / fail-closed with the server stopped or hung, and the usage of
// calls made while it was away delivered exactly once when it is back.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startSim, sumCostNanos } from './support/openai-sim.mjs';
import { CLIENTS, clientFor } from './support/clients.mjs';
import { createBursora, BudgetExceededError, BursoraConfigError, chatRequest, probeBound, waitUntil } from './support/sdk.mjs';
import { startServer, startHungServer, adminApi, freePort } from './support/server.mjs';
import { BudgetUnavailableError } from '../dist/index.mjs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';

const silent = () => {};

/** Spent nano-USD of budget `name` on the server. */
async function serverSpent(admin, project, name) {
  const rows = await admin.spend(project);
  const row = rows.find((r) => r.name === name);
  assert.ok(row, `budget ${name} on the server`);
  return { spent: row.spent_nanos, reserved: row.reserved_nanos };
}

describe('server mode', { timeout: 120_000 }, () => {
  let sim;
  let server;
  let admin;
  /** A fresh project with one budget, and a client wrapped in server mode with its key. */
  async function setup(t, budget, OpenAI = CLIENTS[0].OpenAI, options = {}) {
    sim.reset();
    const { project, key } = await admin.project();
    await admin.budget(project, budget);
    const bursora = createBursora({ endpoint: server.url, apiKey: key, onWarning: silent, ...options });
    t.after(() => bursora.shutdown());
    return { project, key, bursora, client: bursora.wrap(clientFor(OpenAI, sim)) };
  }
  before(async () => {
    sim = await startSim({ completionTokens: 6 });
    server = await startServer();
    admin = adminApi(server.url);
  });
  after(async () => {
    await server?.stop();
    await sim?.close();
  });

  for (const { name, OpenAI } of CLIENTS) {
    test(`${name}: a call is reserved on the server and settled to its true cost`, async (t) => {
      const { project, bursora, client } = await setup(t, { name: 'daily', limit_usd: 10, window: 'day' }, OpenAI);
      assert.ok(client instanceof OpenAI, 'wrap() keeps the client');
      const { data, response } = await client.chat.completions.create(chatRequest()).withResponse();
      assert.equal(response.status, 200);
      assert.equal(data.object, 'chat.completion');
      await bursora.flush();
      const { spent, reserved } = await serverSpent(admin, project, 'daily');
      assert.equal(spent, sumCostNanos(sim.usages));
      assert.equal(reserved, 0);
      const mine = await bursora.spend();
      assert.equal(mine.length, 1);
      assert.equal(mine[0].name, 'daily');
      assert.equal(mine[0].spentNanos, spent);
    });

    test(`${name}: a call that does not fit is refused before the provider sees it`, async (t) => {
      const { project, bursora, client } = await setup(t, { name: 'tiny', limit_usd: 0.000001, window: 'day' }, OpenAI);
      const err = await client.chat.completions.create(chatRequest()).then(
        () => assert.fail('admitted'),
        (e) => e,
      );
      assert.ok(err instanceof BudgetExceededError, String(err?.stack ?? err));
      assert.equal(err.budget.name, 'tiny');
      assert.equal(err.model, 'gpt-4o-mini');
      assert.ok(err.estimatedUsd > 0);
      assert.match(err.message, /tiny/);
      assert.equal(sim.count(), 0, 'the provider saw nothing');
      // withResponse() of a refused call rejects the same way.
      await assert.rejects(client.chat.completions.create(chatRequest()).withResponse(), BudgetExceededError);
      assert.equal(sim.count(), 0);
    });

    test(`${name}: a stream settles from its final usage; the injected usage chunk stays hidden`, async (t) => {
      const { project, bursora, client } = await setup(t, { name: 'daily', limit_usd: 10, window: 'day' }, OpenAI);
      const stream = await client.chat.completions.create(chatRequest({ stream: true }));
      let sawUsage = false;
      let chunks = 0;
      for await (const chunk of stream) {
        chunks++;
        if (chunk.usage) sawUsage = true;
      }
      assert.ok(chunks > 0);
      assert.equal(sawUsage, false, 'the usage chunk we asked for is hidden');
      await bursora.flush();
      const { spent } = await serverSpent(admin, project, 'daily');
      assert.equal(spent, sumCostNanos(sim.usages));
    });
  }

  test('policy fit: the last call is capped to the headroom the server reserved, never past the limit', async (t) => {
    sim.reset();
    const req = chatRequest({ max_completion_tokens: 1000 });
    const { nanos: bound } = await probeBound(sim, () => clientFor(CLIENTS[0].OpenAI, sim), (c) => c.chat.completions.create(req));
    const limit = Math.floor(2.5 * bound);
    const { project, bursora, client } = await setup(t, { name: 'fit', limit_nanos: limit, window: 'day' }, CLIENTS[0].OpenAI, { policy: 'fit' });
    sim.hold();
    const calls = Array.from({ length: 6 }, () => client.chat.completions.create(req).catch((e) => e));
    await waitUntil(() => sim.count() >= 3, 20_000, 'three calls to reach the provider');
    sim.release();
    const results = await Promise.all(calls);
    assert.equal(sim.count(), 3, 'two full calls and one capped one');
    assert.equal(results.filter((r) => r instanceof BudgetExceededError).length, 3);
    const capped = sim.requests.filter((r) => r.body.max_completion_tokens < 1000);
    assert.equal(capped.length, 1);
    await bursora.flush();
    const { spent, reserved } = await serverSpent(admin, project, 'fit');
    assert.equal(reserved, 0);
    assert.ok(spent <= limit);
    assert.equal(spent, sumCostNanos(sim.usages));
  });

  test('the same body object sent many times at once is reserved once per call', async (t) => {
    sim.reset();
    const { project, bursora, client } = await setup(t, { name: 'daily', limit_usd: 10, window: 'day' });
    const body = chatRequest();
    await Promise.all(Array.from({ length: 20 }, () => client.chat.completions.create(body)));
    assert.equal(sim.count(), 20);
    assert.deepEqual(Object.keys(body).sort(), ['max_completion_tokens', 'messages', 'model'], 'the caller\'s body is not touched');
    await bursora.flush();
    assert.equal((await serverSpent(admin, project, 'daily')).spent, sumCostNanos(sim.usages));
  });

  test('a process that just returns still delivers its settlements before it exits (env config)', async () => {
    sim.reset();
    const { project, key } = await admin.project();
    await admin.budget(project, { name: 'daily', limit_usd: 10, window: 'day' });
    const child = spawn(process.execPath, [new URL('./support/server-exit-child.mjs', import.meta.url).pathname, sim.baseURL], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, BURSORA_ENDPOINT: server.url, BURSORA_API_KEY: key, BURSORA_DB: '' },
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const code = await new Promise((r) => child.on('exit', r));
    assert.equal(code, 0, err);
    assert.equal(out, '', 'the SDK never writes to stdout');
    assert.equal(sim.count(), 4);
    const { spent, reserved } = await serverSpent(admin, project, 'daily');
    assert.equal(reserved, 0, 'nothing left reserved');
    assert.equal(spent, sumCostNanos(sim.usages));
  });

  test('a wrong API key: fail-closed refuses with BudgetUnavailableError, nothing is sent', async (t) => {
    sim.reset();
    const warnings = [];
    const bursora = createBursora({ endpoint: server.url, apiKey: 'bsk_wrong', failMode: 'closed', onWarning: (w) => warnings.push(w) });
    t.after(() => bursora.shutdown());
    const client = bursora.wrap(clientFor(CLIENTS[0].OpenAI, sim));
    await assert.rejects(client.chat.completions.create(chatRequest()), BudgetUnavailableError);
    assert.equal(sim.count(), 0);
    assert.ok(warnings.some((w) => w.code === 'server_unauthorized'), JSON.stringify(warnings));
  });
});

describe('server mode: configuration', () => {
  test('an endpoint without a key, a key without an endpoint, budgets or db in server mode', () => {
    assert.throws(() => createBursora({ endpoint: 'http://127.0.0.1:1' }), (e) => e instanceof BursoraConfigError && /BURSORA_API_KEY/.test(e.message));
    assert.throws(() => createBursora({ apiKey: 'bsk_x' }), (e) => e instanceof BursoraConfigError && /BURSORA_ENDPOINT/.test(e.message));
    assert.throws(
      () => createBursora({ endpoint: 'http://127.0.0.1:1', apiKey: 'bsk_x', budgets: [{ name: 'b', limitUsd: 1, window: 'day' }] }),
      (e) => e instanceof BursoraConfigError && /budgets live in bursora-server/.test(e.message),
    );
    assert.throws(() => createBursora({ endpoint: 'ftp://x', apiKey: 'bsk_x' }), (e) => e instanceof BursoraConfigError && /http/.test(e.message));
    assert.throws(() => createBursora({ endpoint: 'http://127.0.0.1:1', apiKey: 'bsk_x', decisionTimeoutMs: 0 }), BursoraConfigError);
  });
});

describe('server mode: the server away', { timeout: 120_000 }, () => {
  let sim;
  before(async () => {
    sim = await startSim({ completionTokens: 4 });
  });
  after(() => sim.close());

  test('server stopped: fail-closed refuses before dispatch; fail-open proceeds and is counted once when it is back', async (t) => {
    sim.reset();
    const port = await freePort();
    // Our own data dir, kept across the restart (the harness deletes only dirs it made).
    const dataDir = mkdtempSync(join(tmpdir(), 'bursora-restart-'));
    t.after(() => rmSync(dataDir, { recursive: true, force: true }));
    let server = await startServer({ port, dataDir });
    const admin = adminApi(server.url);
    const { project, key } = await admin.project();
    await admin.budget(project, { name: 'daily', limit_usd: 10, window: 'day' });
    await server.stop();
    t.after(() => server?.stop());

    const closed = createBursora({ endpoint: `http://127.0.0.1:${port}`, apiKey: key, failMode: 'closed', decisionTimeoutMs: 500, onWarning: silent });
    t.after(() => closed.shutdown());
    const closedClient = closed.wrap(clientFor(CLIENTS[0].OpenAI, sim));
    for (let i = 0; i < 3; i++) {
      const err = await closedClient.chat.completions.create(chatRequest()).then(
        () => assert.fail('admitted while the server is down'),
        (e) => e,
      );
      assert.ok(err instanceof BudgetUnavailableError, String(err?.stack ?? err));
      assert.match(err.message, /failMode is "closed"/);
    }
    assert.equal(sim.count(), 0, 'fail-closed: nothing reached the provider');

    const warnings = [];
    const open = createBursora({ endpoint: `http://127.0.0.1:${port}`, apiKey: key, decisionTimeoutMs: 500, onWarning: (w) => warnings.push(w) });
    t.after(() => open.shutdown());
    const client = open.wrap(clientFor(CLIENTS[0].OpenAI, sim));
    await client.chat.completions.create(chatRequest()); // the first failure opens the circuit
    const N = 20;
    for (let i = 0; i < N; i++) await client.chat.completions.create(chatRequest());
    assert.equal(sim.count(), N + 1, 'fail-open: every call went out');
    assert.ok(warnings.some((w) => w.code === 'server_unavailable'), JSON.stringify(warnings));
    await open.flush(); // the server is away: resolves without delivering

    server = await startServer({ port, dataDir });
    const deadline = Date.now() + 30_000;
    const truth = sumCostNanos(sim.usages);
    let spent = -1;
    while (Date.now() < deadline) {
      await open.flush();
      spent = (await serverSpent(admin, project, 'daily')).spent;
      if (spent >= truth) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal(spent, truth, 'the buffered usage arrived, exactly once');
    // Flushing again (and more retries) adds nothing.
    await open.flush();
    await new Promise((r) => setTimeout(r, 300));
    assert.equal((await serverSpent(admin, project, 'daily')).spent, truth);
  });

  test('server hung (accepts, never answers): only the first call waits for the decision timeout', async (t) => {
    sim.reset();
    const hung = await startHungServer();
    t.after(() => hung.close());
    const timeout = 400;
    for (const failMode of ['open', 'closed']) {
      const bursora = createBursora({ endpoint: hung.url, apiKey: 'bsk_test_key', failMode, decisionTimeoutMs: timeout, onWarning: silent });
      t.after(() => bursora.shutdown());
      const client = bursora.wrap(clientFor(CLIENTS[0].OpenAI, sim));
      const times = [];
      for (let i = 0; i < 5; i++) {
        const start = performance.now();
        await client.chat.completions.create(chatRequest()).catch((e) => {
          if (!(e instanceof BudgetUnavailableError)) throw e;
        });
        times.push(performance.now() - start);
      }
      assert.ok(times[0] >= timeout * 0.9, `${failMode}: the first call waited the timeout (${times[0].toFixed(1)} ms)`);
      for (const ms of times.slice(1)) assert.ok(ms < timeout / 2, `${failMode}: a later call waited ${ms.toFixed(1)} ms: ${times}`);
    }
    assert.equal(sim.count(), 5, 'fail-open sent its 5 calls, fail-closed none');
  });
});
