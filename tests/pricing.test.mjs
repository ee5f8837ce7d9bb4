// Settlement prices what the provider reported: cached input, service_tier, overruns; the bound
// scales with n.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startSim, costNanos } from './support/openai-sim.mjs';
import { CLIENTS, clientFor } from './support/clients.mjs';
import { createBursora, BudgetExceededError, chatRequest, probeBound, settled, spentNanos, reservedNanos, rejectionOf } from './support/sdk.mjs';

const OpenAI = CLIENTS[0].OpenAI;
// gpt-4o-mini priority tier (from 2026-10-12), nano-USD per token.
const PRIORITY = { input: 250, cached: 125, output: 1000 };

describe('settlement prices', { timeout: 30_000 }, () => {
  let sim;
  before(async () => {
    sim = await startSim({ completionTokens: 7, promptTokens: 30 });
  });
  after(() => sim.close());

  const guard = (t, extra = {}) => {
    const warnings = [];
    const b = createBursora({ budgets: [{ name: 'all', limitUsd: 10, window: 'day' }], onWarning: (w) => warnings.push(w), ...extra });
    t.after(() => b.shutdown());
    return { b, warnings, client: b.wrap(clientFor(OpenAI, sim)) };
  };

  test('cached input tokens are settled at the cached price', async (t) => {
    sim.reset();
    sim.set({ cachedTokens: 10 });
    t.after(() => sim.set({ cachedTokens: 0 }));
    const { b, client } = guard(t);
    await client.chat.completions.create(chatRequest());
    const e = await settled(b, 'all');
    assert.equal(spentNanos(e), 20 * 150 + 10 * 75 + 7 * 600);
    assert.equal(spentNanos(e), costNanos(sim.usages[0]));
  });

  test('service_tier "priority" (requested and echoed) is settled at priority prices', async (t) => {
    sim.reset();
    const { b, client } = guard(t);
    const r = await client.chat.completions.create(chatRequest({ service_tier: 'priority' }));
    assert.equal(r.service_tier, 'priority');
    const e = await settled(b, 'all');
    assert.equal(spentNanos(e), 30 * PRIORITY.input + 7 * PRIORITY.output);
  });

  test('the service_tier in the response decides, even when the request named none', async (t) => {
    sim.reset();
    sim.set({ serviceTier: 'priority' });
    t.after(() => sim.set({ serviceTier: undefined }));
    const { b, client } = guard(t);
    await client.chat.completions.create(chatRequest());
    const e = await settled(b, 'all');
    assert.equal(spentNanos(e), 30 * PRIORITY.input + 7 * PRIORITY.output);
  });

  test('a requested priority tier is reserved at priority prices', async () => {
    sim.reset();
    const mk = () => clientFor(OpenAI, sim);
    const base = await probeBound(sim, mk, (c) => c.chat.completions.create(chatRequest()));
    const prio = await probeBound(sim, mk, (c) => c.chat.completions.create(chatRequest({ service_tier: 'priority' })));
    const inputTokens = (base.nanos - 50 * 600) / 150;
    assert.equal(prio.nanos, inputTokens * PRIORITY.input + 50 * PRIORITY.output);
  });

  test('the bound scales with n', async () => {
    sim.reset();
    const mk = () => clientFor(OpenAI, sim);
    const one = await probeBound(sim, mk, (c) => c.chat.completions.create(chatRequest()));
    const three = await probeBound(sim, mk, (c) => c.chat.completions.create(chatRequest({ n: 3 })));
    assert.equal(three.nanos - one.nanos, 2 * 50 * 600);
  });

  test('a provider that ignores max tokens: the overrun is recorded and shown, and later calls see the true spend', async (t) => {
    sim.reset();
    const req = chatRequest({ max_completion_tokens: 10 });
    const { nanos: bound } = await probeBound(sim, () => clientFor(OpenAI, sim), (c) => c.chat.completions.create(req));
    sim.set({ completionTokens: 100, ignoreMaxTokens: true });
    t.after(() => sim.set({ completionTokens: 7, ignoreMaxTokens: false }));
    // Room for two bounds: the first call's overrun leaves less than one.
    const warnings = [];
    const b = createBursora({ budgets: [{ name: 'two', limitUsd: (2 * bound + 100) / 1e9, window: 'day' }], onWarning: (w) => warnings.push(w) });
    t.after(() => b.shutdown());
    const client = b.wrap(clientFor(OpenAI, sim));
    const r = await client.chat.completions.create(req);
    assert.equal(r.usage.completion_tokens, 100);
    const e = await settled(b, 'two');
    const truth = costNanos(sim.usages[0]);
    assert.ok(truth > bound);
    assert.equal(spentNanos(e), truth);
    assert.equal(Math.round(e.overrunUsd * 1e9), truth - bound);
    assert.equal(warnings.filter((w) => w.code === 'overrun').length, 1, JSON.stringify(warnings));
    const err = await rejectionOf(() => client.chat.completions.create(req));
    assert.ok(err instanceof BudgetExceededError);
    assert.equal(sim.count(), 1);
  });
});
