// A call that does not fit its budget throws BudgetExceededError before dispatch: the server
// receives nothing, for every metered endpoint, on both openai majors.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startSim, toNanos } from './support/openai-sim.mjs';
import { CLIENTS, clientFor } from './support/clients.mjs';
import { createBursora, withTags, BudgetExceededError, BursoraError, chatRequest, MODEL, findEntry, settled, spentNanos, reservedNanos, rejectionOf } from './support/sdk.mjs';

for (const { name, OpenAI } of CLIENTS) {
  describe(`blocked calls on ${name}`, { timeout: 30_000 }, () => {
    let sim;
    before(async () => {
      sim = await startSim({ completionTokens: 5 });
    });
    after(() => sim.close());

    test('a call over the cap throws BudgetExceededError with its context, and the server sees zero requests', async (t) => {
      sim.reset();
      const bursora = createBursora({ budgets: [{ name: 'tiny-daily', limitUsd: 0.000001, window: 'day' }], tags: { agent: 'a1' } });
      t.after(() => bursora.shutdown());
      const client = bursora.wrap(clientFor(OpenAI, sim));
      const err = await rejectionOf(() => client.chat.completions.create(chatRequest({ max_completion_tokens: 1000 })));
      assert.ok(err instanceof BudgetExceededError, String(err?.stack ?? err));
      assert.ok(err instanceof BursoraError);
      assert.ok(err instanceof Error);
      assert.equal(err.code, 'budget_exceeded');
      assert.equal(err.budget.name, 'tiny-daily');
      assert.equal(err.budget.window, 'day');
      assert.equal(err.budget.limitUsd, 0.000001);
      assert.equal(typeof err.budget.id, 'string');
      assert.equal(err.budget.spentUsd, 0);
      assert.equal(err.budget.reservedUsd, 0);
      assert.ok(err.budget.resetsAt, 'a day budget has a reset time');
      const resets = new Date(err.budget.resetsAt);
      assert.ok(!Number.isNaN(resets.getTime()) && resets.getTime() > Date.now(), `resetsAt ${err.budget.resetsAt}`);
      assert.equal(resets.getUTCHours(), 0, 'a day window resets at 00:00 UTC');
      assert.equal(err.model, MODEL);
      assert.equal(err.tags?.agent, 'a1');
      // The bound covers at least the requested output at $0.60/MTok.
      assert.ok(toNanos(err.estimatedUsd) >= 1000 * 600, `estimatedUsd ${err.estimatedUsd}`);
      assert.match(err.message, /tiny-daily/);
      assert.equal(sim.count(), 0, 'the provider must see nothing');
      // Nothing reserved behind.
      const e = await settled(bursora, 'tiny-daily');
      assert.equal(spentNanos(e), 0);
      assert.equal(reservedNanos(e), 0);
    });

    test('a refusal is a rejected promise, like every openai error: create() itself does not throw', async (t) => {
      sim.reset();
      const bursora = createBursora({ budgets: [{ name: 'zero', limitUsd: 0, window: 'total' }], unknownModel: 'block' });
      t.after(() => bursora.shutdown());
      const client = bursora.wrap(clientFor(OpenAI, sim));
      // `create(req).catch(handle)` and `reqs.map((r) => create(r))` must not blow up at the call site.
      let p;
      assert.doesNotThrow(() => {
        p = client.chat.completions.create(chatRequest());
      }, 'create() threw synchronously');
      await assert.rejects(p, BudgetExceededError);
      let q;
      assert.doesNotThrow(() => {
        q = client.chat.completions.create(chatRequest()).withResponse();
      }, 'create().withResponse() threw synchronously');
      await assert.rejects(q, BudgetExceededError);
      let r;
      assert.doesNotThrow(() => {
        r = client.chat.completions.create(chatRequest({ model: 'acme-unknown-7' }));
      }, 'an unknown model threw synchronously');
      await assert.rejects(r, (e) => e.code === 'unknown_model');
      assert.equal(sim.count(), 0);
    });

    test('the refusal happens for streams, responses, embeddings and parse too', async (t) => {
      sim.reset();
      const bursora = createBursora({ budgets: [{ name: 'zero', limitUsd: 0, window: 'total' }] });
      t.after(() => bursora.shutdown());
      const client = bursora.wrap(clientFor(OpenAI, sim));
      const attempts = {
        'chat stream': () => client.chat.completions.create(chatRequest({ stream: true })),
        'chat stream helper': () => client.chat.completions.stream(chatRequest()).finalChatCompletion(),
        parse: () => client.chat.completions.parse(chatRequest()),
        'responses.create': () => client.responses.create({ model: MODEL, input: 'hello', max_output_tokens: 20 }),
        'responses stream': () => client.responses.create({ model: MODEL, input: 'hello', stream: true }),
        'responses.stream helper': () => client.responses.stream({ model: MODEL, input: 'hello' }).finalResponse(),
        embeddings: () => client.embeddings.create({ model: 'text-embedding-3-small', input: 'hello world' }),
      };
      for (const [what, run] of Object.entries(attempts)) {
        let err = await rejectionOf(run);
        // openai's stream helpers (EventStream) re-wrap any error that is not an OpenAIError
        // into `new OpenAIError(message)` with the original as `cause`: that is what a caller of
        // `.stream()` catches.
        if (what.endsWith('helper')) {
          assert.ok(err instanceof OpenAI.OpenAIError, `${what}: ${err?.stack ?? err}`);
          err = err.cause;
        }
        assert.ok(err instanceof BudgetExceededError, `${what}: ${err?.stack ?? err}`);
        assert.equal(err.code, 'budget_exceeded', what);
      }
      assert.equal(sim.count(), 0, `requests reached the server: ${sim.requests.map((r) => r.path)}`);
    });

    test('a call must fit every matching block budget; a notify budget never blocks', async (t) => {
      sim.reset();
      const bursora = createBursora({
        budgets: [
          { name: 'roomy', limitUsd: 10, window: 'day' },
          { name: 'team-a-tight', match: { team: 'a' }, limitUsd: 0, window: 'day' },
          { name: 'watch-only', limitUsd: 0, window: 'day', mode: 'notify' },
        ],
        onWarning: () => {},
      });
      t.after(() => bursora.shutdown());
      const teamA = bursora.wrap(clientFor(OpenAI, sim));
      const err = await rejectionOf(() => withTags({ team: 'a' }, () => teamA.chat.completions.create(chatRequest())));
      assert.ok(err instanceof BudgetExceededError);
      assert.equal(err.budget.name, 'team-a-tight');
      assert.equal(sim.count(), 0);
      // All-or-nothing: the refused call left nothing reserved on the roomy budget.
      let roomy = findEntry(await bursora.spend(), 'roomy');
      assert.equal(reservedNanos(roomy), 0);
      // Team b is not matched by the tight budget; the notify budget counts it without blocking.
      await withTags({ team: 'b' }, () => teamA.chat.completions.create(chatRequest()));
      assert.equal(sim.count(), 1);
      roomy = await settled(bursora, 'roomy');
      const watch = await settled(bursora, 'watch-only');
      assert.ok(spentNanos(roomy) > 0);
      assert.equal(spentNanos(watch), spentNanos(roomy));
    });
  });
}
