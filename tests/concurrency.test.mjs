// 1,000 concurrent calls on a cap that admits exactly K: exactly K reach the provider, and the
// settled spend is the sum of what the provider billed, to the nano-USD. In one process, and in
// four processes sharing one SQLite ledger.
//
// The simulator holds every response until all 1,000 calls are either refused or received, so
// no refund can make room for a late call: the count is decided by reservations alone, and the
// test is deterministic whatever the SDK's scheduling.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startSim, sumCostNanos } from './support/openai-sim.mjs';
import { CLIENTS, clientFor } from './support/clients.mjs';
import { createBursora, BudgetExceededError, chatRequest, probeBound, settled, spentNanos, reservedNanos, findEntry, waitUntil } from './support/sdk.mjs';

const CALLS = 1000;

/** A limit (USD) that fits exactly k bounds of `bound` nano-USD, with half a bound to spare. */
const limitFor = (k, bound) => (k * bound + Math.floor(bound / 2)) / 1e9;

for (const { name, OpenAI } of CLIENTS) {
  describe(`1,000 concurrent calls on ${name}`, { timeout: 60_000 }, () => {
    let sim;
    before(async () => {
      sim = await startSim({ completionTokens: 5 });
    });
    after(() => sim.close());

    test('in one process: exactly K reach the provider; spend equals their true cost', async (t) => {
      sim.reset();
      const { nanos: bound } = await probeBound(sim, () => clientFor(OpenAI, sim), (c) => c.chat.completions.create(chatRequest()));
      const K = 7;
      const bursora = createBursora({ budgets: [{ name: 'cap-k', limitUsd: limitFor(K, bound), window: 'day' }] });
      t.after(() => bursora.shutdown());
      const client = bursora.wrap(clientFor(OpenAI, sim, { timeout: 30_000 }));

      sim.hold();
      let refused = 0;
      const others = [];
      const all = Promise.all(
        Array.from({ length: CALLS }, () =>
          // (async () => ...)(): a refusal thrown synchronously by create() still lands here.
          (async () => client.chat.completions.create(chatRequest()))().then(
            (r) => r,
            (e) => {
              if (e instanceof BudgetExceededError) refused++;
              else others.push(e);
              return null;
            },
          ),
        ),
      );
      await waitUntil(() => refused + sim.count() + others.length >= CALLS, 20_000, 'every call to be refused or received');
      assert.deepEqual(others, []);
      assert.equal(sim.count('/v1/chat/completions'), K, `admitted ${sim.count()} of ${CALLS}`);
      assert.equal(refused, CALLS - K);
      // While the K are in flight, their bounds are reserved.
      const during = findEntry(await bursora.spend(), 'cap-k');
      assert.equal(reservedNanos(during), K * bound);
      sim.release();
      const results = await all;
      assert.equal(results.filter(Boolean).length, K);

      const e = await settled(bursora, 'cap-k');
      assert.equal(reservedNanos(e), 0);
      assert.equal(sim.usages.length, K);
      assert.equal(spentNanos(e), sumCostNanos(sim.usages));
      assert.ok(spentNanos(e) < K * bound, 'settlement refunded the unused output');
    });
  });
}

describe('1,000 concurrent calls from 4 processes sharing one SQLite ledger', { timeout: 90_000 }, () => {
  let sim;
  let dir;
  before(async () => {
    sim = await startSim({ completionTokens: 5 });
    dir = mkdtempSync(join(tmpdir(), 'bursora-fork-'));
  });
  after(async () => {
    await sim.close();
    rmSync(dir, { recursive: true, force: true });
  });

  for (const { name, OpenAI } of CLIENTS) {
    test(`exactly K in total across processes (${name})`, async () => {
      sim.reset();
      sim.release();
      const { nanos: bound } = await probeBound(sim, () => clientFor(OpenAI, sim), (c) => c.chat.completions.create(chatRequest()));
      sim.hold();
      const K = 13;
      const db = join(dir, `ledger-${name.replace(/\W/g, '')}.sqlite`);
      const budget = { name: 'shared-cap', limitUsd: limitFor(K, bound), window: 'day' };
      const PROCS = 4;
      let refused = 0;
      const children = [];
      const done = [];
      for (let i = 0; i < PROCS; i++) {
        const child = fork(new URL('./support/fork-worker.mjs', import.meta.url), [], { stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
        let stderr = '';
        child.stderr.on('data', (d) => (stderr += d));
        children.push(child);
        done.push(
          new Promise((resolve, reject) => {
            child.on('message', (m) => {
              if (m.type === 'refused') refused++;
              else if (m.type === 'done') resolve({ ...m, stderr });
            });
            child.on('exit', (code) => (code === 0 ? null : reject(new Error(`worker ${i} exited ${code}: ${stderr}`))));
          }),
        );
        child.send({ baseURL: sim.baseURL, db, budget, calls: CALLS / PROCS, clientName: name });
      }
      try {
        await waitUntil(() => refused + sim.count() >= CALLS, 40_000, 'every call in every process to be refused or received');
        assert.equal(sim.count('/v1/chat/completions'), K, `admitted ${sim.count()} of ${CALLS} across ${PROCS} processes`);
        assert.equal(refused, CALLS - K);
        sim.release();
        const reports = await Promise.race([
          Promise.all(done),
          new Promise((_, reject) => setTimeout(() => reject(new Error('workers did not finish')), 30_000)),
        ]);
        assert.deepEqual(reports.flatMap((r) => r.errors), []);
        assert.equal(reports.reduce((n, r) => n + r.ok, 0), K);
        assert.equal(reports.reduce((n, r) => n + r.refused, 0), CALLS - K);
      } finally {
        sim.release();
        for (const c of children) if (c.exitCode === null) c.kill();
      }
      // A fresh guard on the same file sees what the four processes settled.
      const reader = createBursora({ db, budgets: [budget] });
      try {
        const e = await settled(reader, 'shared-cap');
        assert.equal(reservedNanos(e), 0);
        assert.equal(sim.usages.length, K);
        assert.equal(spentNanos(e), sumCostNanos(sim.usages));
      } finally {
        await reader.shutdown();
      }
    });
  }
});
