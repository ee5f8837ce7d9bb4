// Streams: settled at the provider's final usage; the usage-only chunk the SDK asks for is
// hidden unless the caller asked for it; an early `break` settles input + the deltas seen;
// `fit` cuts a stream at its reservation.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startSim, costNanos, WORDS } from './support/openai-sim.mjs';
import { CLIENTS, clientFor } from './support/clients.mjs';
import { createBursora, BursoraError, chatRequest, MODEL, probeBound, settled, spentNanos, reservedNanos } from './support/sdk.mjs';

const roomy = (name = 'roomy') => ({ name, limitUsd: 10, window: 'day' });
const strip = (c) => {
  const { id, created, usage, ...rest } = c;
  return usage == null ? rest : { ...rest, usage };
};

for (const { name, OpenAI } of CLIENTS) {
  describe(`streams on ${name}`, { timeout: 30_000 }, () => {
    let sim;
    before(async () => {
      sim = await startSim({ completionTokens: 12, cachedTokens: 0 });
    });
    after(() => sim.close());

    test('a chat stream settles at the final usage; the caller sees exactly what the bare client sees', async (t) => {
      sim.reset();
      sim.set({ cachedTokens: 4 });
      t.after(() => sim.set({ cachedTokens: 0 }));
      const bursora = createBursora({ budgets: [roomy()] });
      t.after(() => bursora.shutdown());
      const wrapped = bursora.wrap(clientFor(OpenAI, sim));
      const bare = clientFor(OpenAI, sim);

      const seen = [];
      for await (const c of await wrapped.chat.completions.create(chatRequest({ stream: true }))) seen.push(c);
      const bareSeen = [];
      for await (const c of await bare.chat.completions.create(chatRequest({ stream: true }))) bareSeen.push(c);

      // The SDK asked the provider for usage...
      assert.equal(sim.requests[0].body.stream_options?.include_usage, true);
      assert.equal(sim.requests[1].body.stream_options, undefined);
      // ...and hid the usage-only chunk from a caller who did not ask.
      assert.ok(seen.every((c) => c.choices.length > 0), 'a chunk with empty choices reached the caller');
      assert.ok(seen.every((c) => c.usage == null), 'a usage chunk reached the caller');
      assert.deepEqual(seen.map(strip), bareSeen.map(strip));
      assert.equal(seen.map((c) => c.choices[0]?.delta?.content ?? '').join(''), WORDS.concat(WORDS).slice(0, 12).join(''));

      const e = await settled(bursora, 'roomy');
      assert.equal(reservedNanos(e), 0);
      assert.equal(spentNanos(e), costNanos(sim.usages[0]));
      assert.equal(sim.usages[0].cached, 4);
    });

    test('a caller who asked for include_usage still gets the usage chunk, settled once', async (t) => {
      sim.reset();
      const bursora = createBursora({ budgets: [roomy()] });
      t.after(() => bursora.shutdown());
      const client = bursora.wrap(clientFor(OpenAI, sim));
      const seen = [];
      const stream = await client.chat.completions.create(chatRequest({ stream: true, stream_options: { include_usage: true } }));
      for await (const c of stream) seen.push(c);
      const last = seen.at(-1);
      assert.deepEqual(last.choices, []);
      assert.equal(last.usage.completion_tokens, 12);
      assert.equal(last.usage.prompt_tokens, sim.usages[0].input);
      assert.equal(seen.filter((c) => c.usage).length, 1);
      const e = await settled(bursora, 'roomy');
      assert.equal(spentNanos(e), costNanos(sim.usages[0]));
    });

    test('a `break` after 3 content chunks settles the input bound + those 3 tokens', async (t) => {
      sim.reset();
      sim.set({ completionTokens: 200, chunkDelayMs: 15 });
      t.after(() => sim.set({ completionTokens: 12, chunkDelayMs: 0 }));
      const req = chatRequest({ stream: true, max_completion_tokens: 400 });
      const { nanos: bound } = await probeBound(sim, () => clientFor(OpenAI, sim), (c) => c.chat.completions.create(req));
      const inputBound = (bound - 400 * 600) / 150;
      assert.ok(Number.isInteger(inputBound) && inputBound > 0, `bound ${bound} is not input*150 + 400*600`);

      const bursora = createBursora({ budgets: [roomy()] });
      t.after(() => bursora.shutdown());
      const client = bursora.wrap(clientFor(OpenAI, sim));
      const stream = await client.chat.completions.create(req);
      let contentChunks = 0;
      let text = '';
      for await (const c of stream) {
        const d = c.choices[0]?.delta?.content;
        if (d) {
          contentChunks++;
          text += d;
        }
        if (contentChunks === 3) break;
      }
      assert.equal(text, WORDS.slice(0, 3).join(''));
      const e = await settled(bursora, 'roomy');
      assert.equal(reservedNanos(e), 0, 'the broken stream still holds a reservation');
      assert.equal(spentNanos(e), inputBound * 150 + 3 * 600);
    });

    test('abort via AbortSignal mid-stream settles like a break (never at zero, never the full bound)', async (t) => {
      sim.reset();
      sim.set({ completionTokens: 200, chunkDelayMs: 15 });
      t.after(() => sim.set({ completionTokens: 12, chunkDelayMs: 0 }));
      const req = chatRequest({ stream: true, max_completion_tokens: 400 });
      const { nanos: bound } = await probeBound(sim, () => clientFor(OpenAI, sim), (c) => c.chat.completions.create(req));
      const inputBound = (bound - 400 * 600) / 150;
      const bursora = createBursora({ budgets: [roomy()] });
      t.after(() => bursora.shutdown());
      const client = bursora.wrap(clientFor(OpenAI, sim));
      const ac = new AbortController();
      const stream = await client.chat.completions.create(req, { signal: ac.signal });
      let contentChunks = 0;
      const err = await (async () => {
        try {
          for await (const c of stream) {
            if (c.choices[0]?.delta?.content) contentChunks++;
            if (contentChunks === 5) ac.abort();
          }
        } catch (e) {
          return e;
        }
      })();
      // openai@6 ends the iteration quietly on abort; openai@7 may throw an abort error.
      if (err) assert.ok(err instanceof OpenAI.APIUserAbortError || err?.name === 'AbortError', `not an abort: ${err?.stack ?? err}`);
      assert.ok(contentChunks === 5 || contentChunks === 6, `saw ${contentChunks} chunks after abort`);
      const e = await settled(bursora, 'roomy');
      assert.equal(reservedNanos(e), 0);
      // The SDK may have metered a delta that was in flight when the signal fired.
      const low = inputBound * 150 + contentChunks * 600;
      assert.ok(spentNanos(e) >= low && spentNanos(e) <= low + 600, `spent ${spentNanos(e)}, expected ${low} (+600)`);
    });

    test('tee() and toReadableStream() of a wrapped stream work and settle once', async (t) => {
      sim.reset();
      const bursora = createBursora({ budgets: [roomy()] });
      t.after(() => bursora.shutdown());
      const client = bursora.wrap(clientFor(OpenAI, sim));
      const [left, right] = (await client.chat.completions.create(chatRequest({ stream: true }))).tee();
      const text = async (s) => {
        let out = '';
        for await (const c of s) {
          assert.ok(c.choices.length > 0, 'the hidden usage chunk leaked through tee()');
          out += c.choices[0]?.delta?.content ?? '';
        }
        return out;
      };
      const [a, b] = await Promise.all([text(left), text(right)]);
      assert.equal(a, WORDS.concat(WORDS).slice(0, 12).join(''));
      assert.equal(b, a);
      const readable = (await client.chat.completions.create(chatRequest({ stream: true }))).toReadableStream();
      const reader = readable.getReader();
      let lines = 0;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        const chunk = JSON.parse(new TextDecoder().decode(value));
        assert.ok(chunk.choices.length > 0, 'the hidden usage chunk leaked through toReadableStream()');
        lines++;
      }
      assert.equal(lines, 14);
      const e = await settled(bursora, 'roomy');
      assert.equal(reservedNanos(e), 0);
      assert.equal(spentNanos(e), costNanos(sim.usages[0]) + costNanos(sim.usages[1]));
    });

    test('responses stream settles at response.completed usage', async (t) => {
      sim.reset();
      const bursora = createBursora({ budgets: [roomy()] });
      t.after(() => bursora.shutdown());
      const client = bursora.wrap(clientFor(OpenAI, sim));
      const types = [];
      for await (const ev of await client.responses.create({ model: MODEL, input: 'Tell me a story', stream: true })) types.push(ev.type);
      assert.equal(types[0], 'response.created');
      assert.equal(types.at(-1), 'response.completed');
      assert.equal(types.filter((x) => x === 'response.output_text.delta').length, 12);
      const e = await settled(bursora, 'roomy');
      assert.equal(spentNanos(e), costNanos(sim.usages[0]));
    });

    test('fit: a non-streaming call that does not fit gets its max tokens lowered; spend stays under the limit', async (t) => {
      sim.reset();
      sim.set({ completionTokens: 5000 });
      t.after(() => sim.set({ completionTokens: 12 }));
      const req = chatRequest({ max_completion_tokens: 2000 });
      const { nanos: bound } = await probeBound(sim, () => clientFor(OpenAI, sim), (c) => c.chat.completions.create(req));
      const inputBound = (bound - 2000 * 600) / 150;
      const limitNanos = inputBound * 150 + 100 * 600; // room for ~100 output tokens
      const bursora = createBursora({ budgets: [{ name: 'fit-cap', limitUsd: limitNanos / 1e9, window: 'day' }], policy: 'fit' });
      t.after(() => bursora.shutdown());
      const client = bursora.wrap(clientFor(OpenAI, sim));
      const r = await client.chat.completions.create(req);
      const sent = sim.requests.at(-1).body.max_completion_tokens;
      assert.ok(sent <= 100 && sent >= 16, `max_completion_tokens sent: ${sent}`);
      assert.equal(r.usage.completion_tokens, sent);
      const e = await settled(bursora, 'fit-cap');
      assert.equal(reservedNanos(e), 0);
      assert.equal(spentNanos(e), costNanos(sim.usages.at(-1)));
      assert.ok(spentNanos(e) <= limitNanos);
      // The caller's request object was not mutated.
      assert.equal(req.max_completion_tokens, 2000);
    });

    test('fit: a stream from a provider that ignores max tokens is cut at its reservation; spend ≤ limit', async (t) => {
      sim.reset();
      sim.set({ completionTokens: 3000, ignoreMaxTokens: true });
      t.after(() => sim.set({ completionTokens: 12, ignoreMaxTokens: false }));
      const req = chatRequest({ stream: true, max_completion_tokens: 4000 });
      const { nanos: bound } = await probeBound(sim, () => clientFor(OpenAI, sim), (c) => c.chat.completions.create(req));
      const inputBound = (bound - 4000 * 600) / 150;
      const limitNanos = inputBound * 150 + 60 * 600;
      const bursora = createBursora({ budgets: [{ name: 'fit-stream', limitUsd: limitNanos / 1e9, window: 'day' }], policy: 'fit' });
      t.after(() => bursora.shutdown());
      const client = bursora.wrap(clientFor(OpenAI, sim));
      let tokens = 0;
      let err;
      try {
        for await (const c of await client.chat.completions.create(req)) if (c.choices[0]?.delta?.content) tokens++;
      } catch (e) {
        err = e;
      }
      if (err) assert.ok(err instanceof BursoraError, `a cut stream may only end with a BursoraError: ${err?.stack ?? err}`);
      assert.ok(tokens <= 60, `the caller received ${tokens} tokens past a 60-token reservation`);
      assert.ok(tokens >= 16, `cut too early: ${tokens}`);
      const e = await settled(bursora, 'fit-stream');
      assert.equal(reservedNanos(e), 0);
      assert.ok(spentNanos(e) <= limitNanos, `spent ${spentNanos(e)} > limit ${limitNanos}`);
      assert.ok(spentNanos(e) >= inputBound * 150 + tokens * 600 - 600, `spent ${spentNanos(e)} does not cover what was streamed`);
    });
  });
}
