// The wrapped client is the client: same class, same APIPromise helpers, same stream helpers,
// unmetered methods untouched; each metered call is reserved and settled exactly once.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startSim, costNanos, WORDS } from './support/openai-sim.mjs';
import { CLIENTS, clientFor, officialClientFor, ANSWER_FORMAT } from './support/clients.mjs';
import { createBursora, wrap, chatRequest, MODEL, probeBound, settled, spentNanos, reservedNanos } from './support/sdk.mjs';

for (const { name, OpenAI } of CLIENTS) {
  describe(`wrapped ${name} behaves like ${name}`, { timeout: 30_000 }, () => {
    let sim;
    let bursora;
    let client;
    // Each test starts from a fresh budget so spend() shows only its own calls.
    let budgetSeq = 0;
    const fresh = async () => {
      if (bursora) await bursora.shutdown();
      const budget = `b${++budgetSeq}`;
      bursora = createBursora({ budgets: [{ name: budget, limitUsd: 10, window: 'day' }] });
      client = bursora.wrap(clientFor(OpenAI, sim));
      sim.reset();
      return budget;
    };
    before(async () => {
      sim = await startSim({ completionTokens: 7 });
    });
    after(async () => {
      if (bursora) await bursora.shutdown();
      await sim.close();
    });

    test('instanceof OpenAI, same resources, same options', async () => {
      await fresh();
      assert.ok(client instanceof OpenAI);
      assert.equal(client.baseURL, sim.baseURL);
      assert.equal(client.apiKey, 'sk-test');
      assert.equal(client.maxRetries, 0);
      assert.equal(typeof client.chat.completions.create, 'function');
      assert.ok(client.chat.completions === client.chat.completions, 'resources are stable');
      // wrap() with a guard object or options returns the same type too
      const other = wrap(clientFor(OpenAI, sim), bursora);
      assert.ok(other instanceof OpenAI);
    });

    test('create() result and withResponse()', async () => {
      const b = await fresh();
      const r = await client.chat.completions.create(chatRequest());
      assert.equal(r.object, 'chat.completion');
      assert.equal(r.choices[0].message.content, WORDS.slice(0, 7).join(''));
      const { data, response, request_id } = await client.chat.completions.create(chatRequest()).withResponse();
      assert.equal(data.object, 'chat.completion');
      assert.ok(response instanceof Response);
      assert.equal(response.status, 200);
      assert.match(response.headers.get('x-request-id'), /^req_sim_/);
      assert.equal(request_id, response.headers.get('x-request-id'));
      assert.equal(sim.count(), 2);
      const e = await settled(bursora, b);
      assert.equal(reservedNanos(e), 0);
      assert.equal(spentNanos(e), costNanos(sim.usages[0]) + costNanos(sim.usages[1]));
    });

    test('asResponse() returns the raw Response, body unread, and the reservation is closed', async () => {
      const b = await fresh();
      const { nanos: bound } = await probeBound(sim, () => clientFor(OpenAI, sim), (c) => c.chat.completions.create(chatRequest()));
      const raw = await client.chat.completions.create(chatRequest()).asResponse();
      assert.ok(raw instanceof Response);
      assert.equal(raw.bodyUsed, false);
      const body = await raw.json();
      assert.equal(body.usage.completion_tokens, 7);
      const e = await settled(bursora, b);
      assert.equal(reservedNanos(e), 0, 'an asResponse() call must not hold its reservation');
      const cost = costNanos(sim.usages[0]);
      assert.ok(spentNanos(e) >= cost && spentNanos(e) <= bound, `spent ${spentNanos(e)} outside [${cost}, ${bound}]`);
    });

    test('chat.completions.parse', async () => {
      const b = await fresh();
      sim.set({ content: '{"answer":"the cat"}' });
      try {
        const r = await client.chat.completions.parse(chatRequest({ response_format: ANSWER_FORMAT }));
        assert.deepEqual(r.choices[0].message.parsed, { answer: 'the cat' });
      } finally {
        sim.set({ content: undefined });
      }
      assert.equal(sim.count(), 1);
      const e = await settled(bursora, b);
      assert.equal(spentNanos(e), costNanos(sim.usages[0]));
    });

    test('chat.completions.stream(): one reservation, one settlement', async (t) => {
      sim.reset();
      const req = chatRequest();
      // The helper sends stream: true; probe that exact body's bound.
      const { nanos: bound } = await probeBound(sim, () => clientFor(OpenAI, sim), (c) => c.chat.completions.create({ ...req, stream: true }));
      // Room for one bound, not two: a double reservation would be refused.
      const one = createBursora({ budgets: [{ name: 'one-call', limitUsd: (bound + Math.floor(bound / 2)) / 1e9, window: 'day' }] });
      t.after(() => one.shutdown());
      const c = one.wrap(clientFor(OpenAI, sim));
      const stream = c.chat.completions.stream(req);
      const deltas = [];
      stream.on('content', (d) => deltas.push(d));
      const final = await stream.finalChatCompletion();
      assert.equal(final.choices[0].message.content, WORDS.slice(0, 7).join(''));
      assert.equal(deltas.join(''), final.choices[0].message.content);
      assert.equal(sim.count(), 1);
      const e = await settled(one, 'one-call');
      assert.equal(reservedNanos(e), 0);
      assert.equal(spentNanos(e), costNanos(sim.usages[0]));
    });

    test('responses.create and responses.stream', async () => {
      const b = await fresh();
      const r = await client.responses.create({ model: MODEL, input: 'hello', max_output_tokens: 30 });
      assert.equal(r.output_text, WORDS.slice(0, 7).join(''));
      const s = client.responses.stream({ model: MODEL, input: 'hello again', max_output_tokens: 30 });
      const final = await s.finalResponse();
      assert.equal(final.output_text, WORDS.slice(0, 7).join(''));
      assert.equal(sim.count('/v1/responses'), 2);
      const e = await settled(bursora, b);
      assert.equal(reservedNanos(e), 0);
      assert.equal(spentNanos(e), costNanos(sim.usages[0]) + costNanos(sim.usages[1]));
    });

    test('embeddings.create (default base64 decoding still works), priced from the table', async (t) => {
      sim.reset();
      const b = createBursora({ budgets: [{ name: 'emb', limitUsd: 10, window: 'day' }], onWarning: () => {} });
      t.after(() => b.shutdown());
      const c = b.wrap(officialClientFor(OpenAI, sim));
      const r = await c.embeddings.create({ model: 'text-embedding-3-small', input: ['hello world', 'goodbye'] });
      assert.equal(r.data.length, 2);
      assert.equal(r.data[0].embedding.length, 8);
      assert.equal(r.data[0].embedding[0], 1 / 64);
      assert.equal(sim.requests[0].body.encoding_format, 'base64', 'the client default is kept');
      const f = await c.embeddings.create({ model: 'text-embedding-3-small', input: 'hello', encoding_format: 'float' });
      assert.equal(f.data[0].embedding[1], 2 / 64);
      const e = await settled(b, 'emb');
      assert.equal(spentNanos(e), costNanos(sim.usages[0], 'text-embedding-3-small') + costNanos(sim.usages[1], 'text-embedding-3-small'));
    });

    test('behind a gateway baseURL, text-embedding-3-small is still priced by its model name (SPEC §3)', async (t) => {
      sim.reset();
      const warnings = [];
      const b = createBursora({ budgets: [{ name: 'emb', limitUsd: 10, window: 'day' }], onWarning: (w) => warnings.push(w) });
      t.after(() => b.shutdown());
      const c = b.wrap(clientFor(OpenAI, sim));
      await c.embeddings.create({ model: 'text-embedding-3-small', input: 'hello world' });
      const e = await settled(b, 'emb');
      assert.deepEqual(warnings.filter((w) => w.code === 'unknown_model'), [], 'a model in the price table was treated as unknown');
      assert.equal(spentNanos(e), costNanos(sim.usages[0], 'text-embedding-3-small'));
    });

    test('unmetered methods pass through and cost nothing', async () => {
      const b = await fresh();
      const ids = [];
      for await (const m of client.models.list()) ids.push(m.id);
      assert.deepEqual(ids, ['gpt-4o-mini', 'text-embedding-3-small']);
      const page = await client.get('/models');
      assert.equal(page.object, 'list');
      const { data, response } = await client.models.list().withResponse();
      assert.equal(response.status, 200);
      assert.equal(data.data.length, 2);
      assert.equal(sim.count('/v1/models'), 3);
      const e = await settled(bursora, b);
      assert.equal(spentNanos(e), 0);
      assert.equal(reservedNanos(e), 0);
    });

    test('withOptions() gives a metered client; wrapping twice does not meter twice', async () => {
      const b = await fresh();
      const derived = client.withOptions({ timeout: 5000 });
      assert.ok(derived instanceof OpenAI);
      await derived.chat.completions.create(chatRequest());
      const again = bursora.wrap(client);
      assert.equal(again, client);
      await again.chat.completions.create(chatRequest());
      assert.equal(sim.count(), 2);
      const e = await settled(bursora, b);
      assert.equal(reservedNanos(e), 0);
      assert.equal(spentNanos(e), costNanos(sim.usages[0]) + costNanos(sim.usages[1]));
    });

    test('the request body the provider receives is the caller\'s, unchanged', async () => {
      await fresh();
      const req = chatRequest({ temperature: 0.2, user: 'u1', metadata: { a: 'b' }, n: 2 });
      const copy = structuredClone(req);
      await client.chat.completions.create(req);
      assert.deepEqual(req, copy, 'the caller\'s object was mutated');
      assert.deepEqual(sim.requests[0].body, copy);
    });
  });
}
