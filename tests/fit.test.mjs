// policy "fit": calls that do not fit are capped to the headroom instead of refused — never
// more than the budget can take, also under concurrency; calls that cannot afford a minimum
// output are still refused.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startSim, sumCostNanos } from './support/openai-sim.mjs';
import { CLIENTS, clientFor } from './support/clients.mjs';
import { createBursora, BudgetExceededError, BursoraError, chatRequest, MODEL, probeBound, settled, spentNanos, reservedNanos, rejectionOf, waitUntil } from './support/sdk.mjs';

const OpenAI = CLIENTS[0].OpenAI;

describe('policy "fit"', { timeout: 60_000 }, () => {
  let sim;
  before(async () => {
    sim = await startSim({ completionTokens: 5000 });
  });
  after(() => sim.close());

  test('responses.create gets max_output_tokens lowered', async (t) => {
    sim.reset();
    const req = { model: MODEL, input: 'Write a long essay about budgets.', max_output_tokens: 3000 };
    const { nanos: bound } = await probeBound(sim, () => clientFor(OpenAI, sim), (c) => c.responses.create(req));
    const input = (bound - 3000 * 600) / 150;
    const limit = input * 150 + 200 * 600;
    const b = createBursora({ budgets: [{ name: 'fit', limitUsd: limit / 1e9, window: 'day' }], policy: 'fit' });
    t.after(() => b.shutdown());
    const r = await b.wrap(clientFor(OpenAI, sim)).responses.create(req);
    const sent = sim.requests.at(-1).body.max_output_tokens;
    assert.ok(sent >= 16 && sent <= 200, `max_output_tokens sent: ${sent}`);
    assert.equal(r.usage.output_tokens, sent);
    const e = await settled(b, 'fit');
    assert.ok(spentNanos(e) <= limit);
    assert.equal(spentNanos(e), sumCostNanos(sim.usages));
  });

  test('no headroom for the input plus a minimum output: refused even under fit', async (t) => {
    sim.reset();
    const req = chatRequest({ max_completion_tokens: 3000 });
    const { nanos: bound } = await probeBound(sim, () => clientFor(OpenAI, sim), (c) => c.chat.completions.create(req));
    const input = (bound - 3000 * 600) / 150;
    const b = createBursora({ budgets: [{ name: 'fit', limitUsd: (input * 150 + 10 * 600) / 1e9, window: 'day' }], policy: 'fit' });
    t.after(() => b.shutdown());
    const err = await rejectionOf(() => b.wrap(clientFor(OpenAI, sim)).chat.completions.create(req));
    assert.ok(err instanceof BudgetExceededError, String(err?.stack ?? err));
    assert.equal(sim.count(), 0);
  });

  test('200 concurrent calls under fit never reserve or spend past the limit', async (t) => {
    sim.reset();
    const req = chatRequest({ max_completion_tokens: 1000 });
    const { nanos: bound } = await probeBound(sim, () => clientFor(OpenAI, sim), (c) => c.chat.completions.create(req));
    const limit = Math.floor(3.5 * bound);
    const b = createBursora({ budgets: [{ name: 'fit', limitUsd: limit / 1e9, window: 'day' }], policy: 'fit' });
    t.after(() => b.shutdown());
    const client = b.wrap(clientFor(OpenAI, sim, { timeout: 30_000 }));
    sim.hold();
    t.after(() => sim.release());
    let refused = 0;
    const others = [];
    const all = Promise.all(
      Array.from({ length: 200 }, () =>
        (async () => client.chat.completions.create(req))().catch((e) => {
          if (e instanceof BudgetExceededError) refused++;
          else others.push(e);
        }),
      ),
    );
    await waitUntil(() => refused + sim.count() + others.length >= 200, 20_000, 'every call to be refused or received');
    assert.deepEqual(others, []);
    // Three full calls, then one capped to the remaining half bound; the rest refused.
    assert.equal(sim.count(), 4);
    const capped = sim.requests.filter((r) => r.body.max_completion_tokens < 1000);
    assert.equal(capped.length, 1);
    const during = await b.spend();
    assert.ok(reservedNanos(during[0]) <= limit, `reserved ${reservedNanos(during[0])} > limit ${limit}`);
    sim.release();
    await all;
    const e = await settled(b, 'fit');
    assert.equal(reservedNanos(e), 0);
    assert.equal(spentNanos(e), sumCostNanos(sim.usages));
    assert.ok(spentNanos(e) <= limit, `spent ${spentNanos(e)} > limit ${limit}`);
  });

  test('a cut stream raises a BursoraError the caller can recognise, after the chunks that fit', async (t) => {
    sim.reset();
    sim.set({ ignoreMaxTokens: true, completionTokens: 500 });
    t.after(() => sim.set({ ignoreMaxTokens: false, completionTokens: 5000 }));
    const req = { model: MODEL, input: 'Stream a long essay.', stream: true, max_output_tokens: 1000 };
    const { nanos: bound } = await probeBound(sim, () => clientFor(OpenAI, sim), (c) => c.responses.create(req));
    const input = (bound - 1000 * 600) / 150;
    const limit = input * 150 + 40 * 600;
    const b = createBursora({ budgets: [{ name: 'fit', limitUsd: limit / 1e9, window: 'day' }], policy: 'fit' });
    t.after(() => b.shutdown());
    let deltas = 0;
    let err;
    try {
      for await (const ev of await b.wrap(clientFor(OpenAI, sim)).responses.create(req)) if (ev.type === 'response.output_text.delta') deltas++;
    } catch (e) {
      err = e;
    }
    assert.ok(err instanceof BursoraError, `expected a BursoraError, got ${err?.stack ?? err}`);
    assert.equal(err.code, 'budget_cutoff');
    assert.ok(deltas >= 16 && deltas <= 40, `deltas ${deltas}`);
    const e = await settled(b, 'fit');
    assert.equal(reservedNanos(e), 0);
    assert.ok(spentNanos(e) <= limit, `spent ${spentNanos(e)} > limit ${limit}`);
  });
});
