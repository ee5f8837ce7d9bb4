// Budget selectors and windows: `model` and `provider` match like tags; default tags feed
// selectors; windows report their UTC reset.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startSim } from './support/openai-sim.mjs';
import { CLIENTS, clientFor } from './support/clients.mjs';
import { createBursora, withTags, BudgetExceededError, chatRequest, findEntry, settled, spentNanos, rejectionOf } from './support/sdk.mjs';

const OpenAI = CLIENTS[0].OpenAI;

describe('budget selectors and windows', { timeout: 20_000 }, () => {
  let sim;
  before(async () => {
    sim = await startSim({ completionTokens: 3 });
  });
  after(() => sim.close());

  test('`model` and `provider` are matchable as if they were tags', async (t) => {
    sim.reset();
    const b = createBursora({
      budgets: [
        { name: 'no-4o-mini', match: { model: 'gpt-4o-mini' }, limitUsd: 0, window: 'day' },
        { name: 'openai-spend', match: { provider: 'openai' }, limitUsd: 10, window: 'day' },
        { name: 'per-model', match: { model: '*' }, limitUsd: 10, window: 'day' },
      ],
    });
    t.after(() => b.shutdown());
    const c = b.wrap(clientFor(OpenAI, sim));
    const err = await rejectionOf(() => c.chat.completions.create(chatRequest()));
    assert.ok(err instanceof BudgetExceededError);
    assert.equal(err.budget.name, 'no-4o-mini');
    await c.chat.completions.create(chatRequest({ model: 'gpt-4o' }));
    assert.equal(sim.count(), 1);
    const entries = await b.spend();
    await b.flush();
    assert.ok(spentNanos(await settled(b, 'openai-spend')) > 0, 'gpt-4o is an openai call');
    assert.ok(spentNanos(await settled(b, 'per-model', 'gpt-4o')) > 0);
    // All-or-nothing: the refused call left nothing reserved or spent on the template it matched.
    for (const e of entries.filter((x) => x.name === 'per-model' && x.key?.includes('gpt-4o-mini'))) {
      assert.equal(spentNanos(e), 0);
      assert.equal(e.reservedNanos ?? Math.round(e.reservedUsd * 1e9), 0);
    }
  });

  test('default tags of createBursora and of wrap(client, { tags }) feed selectors; scopes override them', async (t) => {
    sim.reset();
    const b = createBursora({
      budgets: [
        { name: 'per-app', match: { app: '*' }, limitUsd: 10, window: 'day' },
        { name: 'per-env', match: { env: '*' }, limitUsd: 10, window: 'day' },
      ],
      tags: { env: 'prod', app: 'guard-default' },
    });
    t.after(() => b.shutdown());
    const billing = b.wrap(clientFor(OpenAI, sim), { tags: { app: 'billing' } });
    const plain = b.wrap(clientFor(OpenAI, sim));
    await billing.chat.completions.create(chatRequest());
    await plain.chat.completions.create(chatRequest());
    await withTags({ app: 'scoped' }, () => billing.chat.completions.create(chatRequest()));
    const one = spentNanos(await settled(b, 'per-app', 'billing'));
    assert.ok(one > 0);
    assert.equal(spentNanos(await settled(b, 'per-app', 'guard-default')), one);
    assert.equal(spentNanos(await settled(b, 'per-app', 'scoped')), one);
    assert.equal(spentNanos(await settled(b, 'per-env', 'prod')), 3 * one);
  });

  test('each window reports its next UTC boundary; total never resets', async (t) => {
    const windows = ['minute', 'hour', 'day', 'week', 'month', 'total'];
    const b = createBursora({ budgets: windows.map((w) => ({ name: `w-${w}`, limitUsd: 1, window: w })) });
    t.after(() => b.shutdown());
    const before = Date.now();
    const entries = await b.spend();
    const now = new Date(before);
    const at = (name) => findEntry(entries, name).resetsAt;
    const expect = {
      minute: Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate(), now.getUTCHours(), now.getUTCMinutes() + 1),
      hour: Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate(), now.getUTCHours() + 1),
      day: Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1),
      week: Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + ((8 - now.getUTCDay()) % 7 || 7)),
      month: Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1),
    };
    for (const [w, ms] of Object.entries(expect)) {
      const got = new Date(at(`w-${w}`)).getTime();
      // A minute boundary may pass between Date.now() and spend(): allow the next one.
      assert.ok(got === ms || (w === 'minute' && got === ms + 60_000), `${w}: resetsAt ${at(`w-${w}`)}, expected ${new Date(ms).toISOString()}`);
    }
    assert.equal(at('w-total') ?? null, null);
    for (const w of windows) assert.equal(findEntry(entries, `w-${w}`).window, w);
  });
});
