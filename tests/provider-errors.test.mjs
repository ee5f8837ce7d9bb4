// Provider errors reach the caller untouched (same openai error classes) and release the
// reservation; a call with no response at all is settled at its reservation.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startSim, costNanos } from './support/openai-sim.mjs';
import { CLIENTS, clientFor } from './support/clients.mjs';
import { createBursora, BursoraError, chatRequest, MODEL, probeBound, settled, spentNanos, reservedNanos, rejectionOf } from './support/sdk.mjs';

for (const { name, OpenAI } of CLIENTS) {
  describe(`provider errors on ${name}`, { timeout: 30_000 }, () => {
    let sim;
    before(async () => {
      sim = await startSim({ completionTokens: 4 });
    });
    after(() => sim.close());

    const cases = [
      { status: 400, cls: 'BadRequestError', message: 'Invalid value for messages' },
      { status: 401, cls: 'AuthenticationError', message: 'Incorrect API key provided' },
      { status: 429, cls: 'RateLimitError', message: 'Rate limit reached' },
      { status: 500, cls: 'InternalServerError', message: 'The server had an error' },
    ];
    for (const { status, cls, message } of cases) {
      test(`a ${status} arrives as ${cls}, unchanged, and releases the reservation`, async (t) => {
        sim.reset();
        sim.set({ error: { status, message } });
        t.after(() => sim.set({ error: undefined }));
        const bursora = createBursora({ budgets: [{ name: 'all', limitUsd: 10, window: 'day' }] });
        t.after(() => bursora.shutdown());
        const client = bursora.wrap(clientFor(OpenAI, sim));
        const bare = clientFor(OpenAI, sim);
        const err = await rejectionOf(() => client.chat.completions.create(chatRequest()));
        const bareErr = await rejectionOf(() => bare.chat.completions.create(chatRequest()));
        assert.ok(err instanceof OpenAI[cls], `${err?.constructor?.name}: ${err?.message}`);
        assert.ok(!(err instanceof BursoraError));
        assert.equal(err.status, status);
        assert.equal(err.message, bareErr.message);
        assert.deepEqual(err.error, bareErr.error);
        assert.equal(err.headers.get('x-request-id') !== null, true);
        assert.equal(sim.count(), 2);
        const e = await settled(bursora, 'all');
        assert.equal(spentNanos(e), 0);
        assert.equal(reservedNanos(e), 0);
      });
    }

    test('errors on streams and responses release too', async (t) => {
      sim.reset();
      sim.set({ error: { status: 400, message: 'nope' } });
      t.after(() => sim.set({ error: undefined }));
      const bursora = createBursora({ budgets: [{ name: 'all', limitUsd: 10, window: 'day' }] });
      t.after(() => bursora.shutdown());
      const client = bursora.wrap(clientFor(OpenAI, sim));
      for (const run of [
        () => client.chat.completions.create(chatRequest({ stream: true })),
        () => client.chat.completions.stream(chatRequest()).finalChatCompletion(),
        () => client.responses.create({ model: MODEL, input: 'x', max_output_tokens: 10 }),
        () => client.embeddings.create({ model: 'text-embedding-3-small', input: 'x' }),
      ]) {
        const err = await rejectionOf(run);
        assert.ok(err instanceof OpenAI.BadRequestError, String(err?.stack ?? err));
      }
      const e = await settled(bursora, 'all');
      assert.equal(spentNanos(e), 0);
      assert.equal(reservedNanos(e), 0);
    });

    test('the client\'s own retries are one call: one reservation, settled at the final usage', async (t) => {
      sim.reset();
      let failures = 2;
      sim.set({ error: () => (failures-- > 0 ? { status: 500, message: 'flaky' } : undefined) });
      t.after(() => sim.set({ error: undefined }));
      const { nanos: bound } = await (async () => {
        const saved = failures;
        failures = 0;
        try {
          return await probeBound(sim, () => clientFor(OpenAI, sim), (c) => c.chat.completions.create(chatRequest()));
        } finally {
          failures = saved;
        }
      })();
      // Room for one bound only: a reservation per attempt would be refused on the retry.
      const bursora = createBursora({ budgets: [{ name: 'one', limitUsd: (bound + Math.floor(bound / 2)) / 1e9, window: 'day' }] });
      t.after(() => bursora.shutdown());
      const client = bursora.wrap(clientFor(OpenAI, sim, { maxRetries: 2 }));
      const r = await client.chat.completions.create(chatRequest());
      assert.equal(r.usage.completion_tokens, 4);
      assert.equal(sim.count(), 3);
      const e = await settled(bursora, 'one');
      assert.equal(reservedNanos(e), 0);
      assert.equal(spentNanos(e), costNanos(sim.usages[0]));
    });

    // The request never left the process / never reached a server: the outcome is known (the
    // provider billed nothing), so holding the caller to the full bound would drain a budget on
    // a network outage, then block calls once it is back.
    test('a call aborted before it was sent (signal already aborted) costs nothing', async (t) => {
      sim.reset();
      const bursora = createBursora({ budgets: [{ name: 'all', limitUsd: 10, window: 'day' }] });
      t.after(() => bursora.shutdown());
      const client = bursora.wrap(clientFor(OpenAI, sim));
      const ac = new AbortController();
      ac.abort();
      const err = await rejectionOf(() => client.chat.completions.create(chatRequest(), { signal: ac.signal }));
      assert.ok(err instanceof OpenAI.APIUserAbortError, String(err?.stack ?? err));
      assert.equal(sim.count(), 0);
      const e = await settled(bursora, 'all');
      assert.equal(reservedNanos(e), 0);
      assert.equal(spentNanos(e), 0, 'charged the full bound for a request that was never sent');
    });

    test('connection refused (nothing reached a server) costs nothing', async (t) => {
      const srv = net.createServer();
      await new Promise((r) => srv.listen(0, '127.0.0.1', r));
      const { port } = srv.address();
      await new Promise((r) => srv.close(r));
      const bursora = createBursora({ budgets: [{ name: 'all', limitUsd: 10, window: 'day' }] });
      t.after(() => bursora.shutdown());
      const client = bursora.wrap(new OpenAI({ apiKey: 'sk-test', baseURL: `http://127.0.0.1:${port}/v1`, maxRetries: 0, timeout: 5000 }));
      const err = await rejectionOf(() => client.chat.completions.create(chatRequest()));
      assert.ok(err instanceof OpenAI.APIConnectionError, String(err?.stack ?? err));
      const e = await settled(bursora, 'all');
      assert.equal(reservedNanos(e), 0);
      assert.equal(spentNanos(e), 0, 'charged the full bound for a request no server received');
    });

    test('no response at all (timeout): the error passes through; settled at the reservation', async (t) => {
      sim.reset();
      const { nanos: bound } = await probeBound(sim, () => clientFor(OpenAI, sim), (c) => c.chat.completions.create(chatRequest()));
      sim.set({ hang: true });
      t.after(() => sim.set({ hang: false }));
      const bursora = createBursora({ budgets: [{ name: 'all', limitUsd: 10, window: 'day' }] });
      t.after(() => bursora.shutdown());
      const client = bursora.wrap(clientFor(OpenAI, sim, { timeout: 300 }));
      const err = await rejectionOf(() => client.chat.completions.create(chatRequest()));
      assert.ok(err instanceof OpenAI.APIConnectionTimeoutError, String(err?.stack ?? err));
      const e = await settled(bursora, 'all');
      assert.equal(reservedNanos(e), 0);
      assert.equal(spentNanos(e), bound, 'an unknown outcome is settled at its reservation');
    });
  });
}
