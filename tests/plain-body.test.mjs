// Plain chat bodies (text messages, sampling options) are estimated straight from their JSON
// text; every other body through the full estimator. Both must reserve the same to the nano-USD
// for the same request, and bad bodies must still be refused with the full path's message.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startSim, toNanos } from './support/openai-sim.mjs';
import { CLIENTS, clientFor } from './support/clients.mjs';
import { createBursora, BudgetExceededError, BursoraError, MODEL, rejectionOf } from './support/sdk.mjs';

const messages = [
  { role: 'system', content: 'You are terse.' },
  { role: 'user', content: 'Say "hi"\n— in French, please. 🙂', name: 'ann' },
  { role: 'assistant', content: null },
  { role: 'user', content: 'And in German? '.repeat(100) },
];

// Pairs of bodies the estimator counts alike: the first plain, the second with a key only the
// full path reads (`tool_choice` as a string and `parallel_tool_calls` add no tokens).
const pairs = [
  [{ model: MODEL, messages, max_completion_tokens: 200 }, { model: MODEL, messages, max_completion_tokens: 200, tool_choice: 'auto' }],
  [{ model: MODEL, messages, max_tokens: 50, n: 3, temperature: 0.5, stream: false }, { model: MODEL, messages, max_tokens: 50, n: 3, parallel_tool_calls: false, stream: false }],
  [{ model: 'my-own-model', messages, max_completion_tokens: 10 }, { model: 'my-own-model', messages, max_completion_tokens: 10, tool_choice: 'none' }],
];

for (const { name, OpenAI } of CLIENTS) {
  describe(`plain chat bodies on ${name}`, { timeout: 30_000 }, () => {
    let sim;
    before(async () => {
      sim = await startSim({ completionTokens: 5 });
    });
    after(() => sim.close());

    test('a plain body and the same request read by the full estimator are estimated to the same nano-USD', async (t) => {
      const bursora = createBursora({ budgets: [{ name: 'none-left', limitUsd: 0, window: 'total' }] });
      t.after(() => bursora.shutdown());
      const client = bursora.wrap(clientFor(OpenAI, sim));
      sim.reset();
      for (const [plain, full] of pairs) {
        const a = await rejectionOf(() => client.chat.completions.create(plain));
        const b = await rejectionOf(() => client.chat.completions.create(full));
        assert.ok(a instanceof BudgetExceededError, String(a?.stack ?? a));
        assert.ok(b instanceof BudgetExceededError, String(b?.stack ?? b));
        assert.ok(a.estimatedUsd > 0);
        assert.equal(toNanos(a.estimatedUsd), toNanos(b.estimatedUsd), `${JSON.stringify(plain).slice(0, 80)}...`);
        assert.equal(a.model, plain.model);
        assert.equal(b.model, plain.model);
      }
      assert.equal(sim.count(), 0, 'refused calls reach nobody');
    });

    test('bodies the fast path declines are still refused with a message that says what is wrong', async (t) => {
      const bursora = createBursora({ budgets: [{ name: 'plenty', limitUsd: 100, window: 'total' }] });
      t.after(() => bursora.shutdown());
      const client = bursora.wrap(clientFor(OpenAI, sim));
      sim.reset();
      for (const [body, hint] of [
        [{ model: MODEL, messages: [{ role: 'user', content: 'hi' }], n: 0 }, /"n" must be between 1 and 128/],
        [{ model: MODEL, messages: [{ role: 'user', content: 'hi' }], max_tokens: 1.5 }, /non-negative integer/],
        [{ model: MODEL, messages: [{ content: 'hi' }] }, /needs a "role"/],
        [{ model: '  ', messages: [] }, /"model" is empty/],
      ]) {
        const err = await rejectionOf(() => client.chat.completions.create(body));
        assert.ok(err instanceof BursoraError, String(err?.stack ?? err));
        assert.equal(err.code, 'invalid_input');
        assert.match(err.message, hint);
      }
      assert.equal(sim.count(), 0);
    });
  });
}
