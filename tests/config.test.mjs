// Bad configuration fails early with BursoraConfigError; unknown models follow `unknownModel`.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startSim } from './support/openai-sim.mjs';
import { CLIENTS, clientFor } from './support/clients.mjs';
import { createBursora, wrap, BursoraConfigError, BursoraError, UnknownModelError, chatRequest, settled, spentNanos, reservedNanos, rejectionOf } from './support/sdk.mjs';

const OpenAI = CLIENTS[0].OpenAI;

describe('configuration errors', { timeout: 15_000 }, () => {
  const isConfig = (e) => e instanceof BursoraConfigError && e instanceof BursoraError && e.code === 'config';

  test('wrap() of something that is not a supported client', () => {
    for (const notAClient of [{}, { chat: {} }, null, 42, 'openai', () => {}]) {
      assert.throws(() => wrap(notAClient, { budgets: [] }), (e) => isConfig(e) && /openai/i.test(e.message), String(notAClient));
    }
    const b = createBursora({ budgets: [] });
    try {
      assert.throws(() => b.wrap({}), isConfig);
    } finally {
      b.shutdown();
    }
  });

  test('invalid budgets', () => {
    const bad = {
      'negative limit': { name: 'neg', limitUsd: -1, window: 'day' },
      'NaN limit': { name: 'nan', limitUsd: NaN, window: 'day' },
      'infinite limit': { name: 'inf', limitUsd: Infinity, window: 'day' },
      'unknown window': { name: 'w', limitUsd: 1, window: 'fortnight' },
      'unknown mode': { name: 'm', limitUsd: 1, window: 'day', mode: 'maybe' },
      'no name': { limitUsd: 1, window: 'day' },
    };
    for (const [what, budget] of Object.entries(bad)) {
      assert.throws(() => createBursora({ budgets: [budget] }), isConfig, what);
    }
    assert.throws(
      () => createBursora({ budgets: [{ name: 'dup', limitUsd: 1, window: 'day' }, { name: 'dup', limitUsd: 2, window: 'day' }] }),
      isConfig,
      'duplicate names',
    );
    assert.throws(() => createBursora({ policy: 'sometimes' }), isConfig, 'policy');
    assert.throws(() => createBursora({ unknownModel: 'guess' }), isConfig, 'unknownModel');
  });
});

describe('unknown models', { timeout: 15_000 }, () => {
  let sim;
  before(async () => {
    sim = await startSim({ completionTokens: 4 });
  });
  after(() => sim.close());

  test('fallback (default): the call proceeds, is never $0, and warns once', async (t) => {
    sim.reset();
    const warnings = [];
    const bursora = createBursora({ budgets: [{ name: 'all', limitUsd: 10, window: 'day' }], onWarning: (w) => warnings.push(w) });
    t.after(() => bursora.shutdown());
    const client = bursora.wrap(clientFor(OpenAI, sim));
    const r1 = await client.chat.completions.create(chatRequest({ model: 'acme-llm-unknown-1' }));
    const r2 = await client.chat.completions.create(chatRequest({ model: 'acme-llm-unknown-1' }));
    assert.equal(r1.model, 'acme-llm-unknown-1');
    assert.equal(r2.choices.length, 1);
    assert.equal(sim.count(), 2);
    const e = await settled(bursora, 'all');
    assert.ok(spentNanos(e) > 0, 'an unknown model is never free');
    assert.equal(reservedNanos(e), 0);
    await bursora.flush();
    const unknown = warnings.filter((w) => /unknown/i.test(w.code));
    assert.equal(unknown.length, 1, JSON.stringify(warnings));
    assert.equal(typeof unknown[0].message, 'string');
    assert.match(unknown[0].message, /acme-llm-unknown-1/);
  });

  test('block: UnknownModelError and the server sees nothing', async (t) => {
    sim.reset();
    const bursora = createBursora({ budgets: [{ name: 'all', limitUsd: 10, window: 'day' }], unknownModel: 'block', onWarning: () => {} });
    t.after(() => bursora.shutdown());
    const client = bursora.wrap(clientFor(OpenAI, sim));
    const err = await rejectionOf(() => client.chat.completions.create(chatRequest({ model: 'acme-llm-unknown-2' })));
    assert.ok(err instanceof UnknownModelError, String(err?.stack ?? err));
    assert.ok(err instanceof BursoraError);
    assert.equal(err.code, 'unknown_model');
    assert.match(err.message, /acme-llm-unknown-2/);
    assert.equal(sim.count(), 0);
    // A known model still works under the same guard.
    await client.chat.completions.create(chatRequest());
    assert.equal(sim.count(), 1);
  });

  test('prices option adds a model: no warning, settled at that price', async (t) => {
    sim.reset();
    sim.set({ promptTokens: 100 });
    t.after(() => sim.set({ promptTokens: undefined }));
    const warnings = [];
    const bursora = createBursora({
      budgets: [{ name: 'all', limitUsd: 10, window: 'day' }],
      prices: { 'house-model': { inputPerMTok: 1, outputPerMTok: 2, maxOutputTokens: 1000 } },
      onWarning: (w) => warnings.push(w),
    });
    t.after(() => bursora.shutdown());
    const client = bursora.wrap(clientFor(OpenAI, sim));
    await client.chat.completions.create(chatRequest({ model: 'house-model' }));
    const e = await settled(bursora, 'all');
    assert.equal(spentNanos(e), 100 * 1000 + 4 * 2000);
    assert.deepEqual(warnings.filter((w) => /unknown/i.test(w.code)), []);
  });
});
