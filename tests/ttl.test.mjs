// SPEC §2.5: nothing stays reserved forever. A stream nobody reads expires at its reservation;
// a live stream renews its reservation and settles at its real usage however long it runs.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startSim, costNanos } from './support/openai-sim.mjs';
import { CLIENTS, clientFor } from './support/clients.mjs';
import { createBursora, chatRequest, probeBound, findEntry, spentNanos, reservedNanos } from './support/sdk.mjs';

const OpenAI = CLIENTS[0].OpenAI;
const TTL = 1000;

/** spend() until `cond(entry)`, bounded. */
async function until(b, name, cond, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    await b.flush();
    const e = findEntry(await b.spend(), name);
    if (cond(e) || Date.now() > deadline) return e;
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('reservation TTL', { timeout: 30_000 }, () => {
  let sim;
  before(async () => {
    sim = await startSim({ completionTokens: 5 });
  });
  after(() => sim.close());

  for (const nextCall of [false, true]) {
    test(`a stream nobody reads is settled at its reservation after the TTL (${nextCall ? 'seen by the next call' : 'seen by spend() alone'})`, async (t) => {
      sim.reset();
      const req = chatRequest({ stream: true });
      const { nanos: bound } = await probeBound(sim, () => clientFor(OpenAI, sim), (c) => c.chat.completions.create(req));
      const b = createBursora({ budgets: [{ name: 'all', limitUsd: 10, window: 'day' }], reservationTtlMs: TTL });
      t.after(() => b.shutdown());
      const client = b.wrap(clientFor(OpenAI, sim));
      const stream = await client.chat.completions.create(req);
      t.after(() => stream.controller.abort());
      const held = findEntry(await b.spend(), 'all');
      assert.equal(reservedNanos(held), bound);
      await new Promise((r) => setTimeout(r, TTL + 1200));
      let extra = 0;
      if (nextCall) {
        await client.chat.completions.create(chatRequest());
        extra = costNanos(sim.usages.at(-1));
      }
      const e = await until(b, 'all', (x) => reservedNanos(x) === 0, 2000);
      assert.equal(reservedNanos(e), 0, `the reservation is still held ${TTL + 1200 + 2000} ms after its ${TTL} ms TTL`);
      assert.equal(spentNanos(e), bound + extra);
    });
  }

  test('a live stream longer than the TTL renews its reservation and settles at its real usage', async (t) => {
    sim.reset();
    sim.set({ completionTokens: 25, chunkDelayMs: 100 }); // ~2.7 s of stream for a 1 s TTL
    t.after(() => sim.set({ completionTokens: 5, chunkDelayMs: 0 }));
    const b = createBursora({ budgets: [{ name: 'all', limitUsd: 10, window: 'day' }], reservationTtlMs: TTL });
    t.after(() => b.shutdown());
    const stream = await b.wrap(clientFor(OpenAI, sim)).chat.completions.create(chatRequest({ stream: true }));
    let n = 0;
    for await (const c of stream) if (c.choices[0]?.delta?.content) n++;
    assert.equal(n, 25);
    const e = await until(b, 'all', (x) => reservedNanos(x) === 0, 3000);
    assert.equal(reservedNanos(e), 0);
    assert.equal(spentNanos(e), costNanos(sim.usages[0]), 'the stream was settled at its reservation (expired) instead of its usage');
  });

  test('reservationTtlMs below one second is a config error', () => {
    assert.throws(() => createBursora({ reservationTtlMs: 10 }), (e) => e.code === 'config');
  });
});
