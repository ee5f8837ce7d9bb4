// The simulator itself, checked with the bare (unwrapped) openai clients: if these fail, the
// SDK tests that build on the sim mean nothing.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startSim, costNanos, WORDS } from './support/openai-sim.mjs';
import { CLIENTS, ANSWER_FORMAT } from './support/clients.mjs';

for (const { name, OpenAI } of CLIENTS) {
  describe(`sim with bare ${name}`, { timeout: 20_000 }, () => {
    let sim;
    let client;
    before(async () => {
      sim = await startSim({ completionTokens: 6 });
      client = new OpenAI({ apiKey: 'sk-test', baseURL: sim.baseURL, maxRetries: 0, timeout: 5000 });
    });
    after(() => sim.close());

    test('chat JSON honours max_completion_tokens and reports usage', async () => {
      sim.reset();
      const r = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi there' }], max_completion_tokens: 4 });
      assert.equal(r.choices[0].message.content, WORDS.slice(0, 4).join(''));
      assert.equal(r.choices[0].finish_reason, 'length');
      assert.equal(r.usage.completion_tokens, 4);
      assert.equal(r.usage.prompt_tokens, sim.usages[0].input);
      assert.equal(sim.count('/v1/chat/completions'), 1);
      assert.equal(sim.requests[0].body.max_completion_tokens, 4);
    });

    test('chat stream without include_usage has no usage chunk; with it, the last chunk has choices: []', async () => {
      sim.reset();
      const s1 = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }], stream: true });
      const c1 = [];
      for await (const c of s1) c1.push(c);
      assert.ok(c1.every((c) => c.choices.length === 1 && !c.usage));
      assert.equal(c1.map((c) => c.choices[0].delta.content ?? '').join(''), WORDS.slice(0, 6).join(''));
      const s2 = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }], stream: true, stream_options: { include_usage: true } });
      const c2 = [];
      for await (const c of s2) c2.push(c);
      const last = c2.at(-1);
      assert.deepEqual(last.choices, []);
      assert.equal(last.usage.completion_tokens, 6);
      assert.equal(sim.usages.length, 2);
    });

    test('chat.completions.stream helper and parse', async () => {
      sim.reset();
      const stream = client.chat.completions.stream({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }] });
      const final = await stream.finalChatCompletion();
      assert.equal(final.choices[0].message.content, WORDS.slice(0, 6).join(''));
      sim.set({ content: '{"answer":"the cat"}' });
      try {
        const parsed = await client.chat.completions.parse({
          model: 'gpt-4o-mini',
          messages: [{ role: 'user', content: 'x' }],
          response_format: ANSWER_FORMAT,
        });
        assert.deepEqual(parsed.choices[0].message.parsed, { answer: 'the cat' });
      } finally {
        sim.set({ content: undefined });
      }
    });

    test('responses JSON and stream', async () => {
      sim.reset();
      const r = await client.responses.create({ model: 'gpt-4o-mini', input: 'hello', max_output_tokens: 3 });
      assert.equal(r.output_text, WORDS.slice(0, 3).join(''));
      assert.equal(r.usage.output_tokens, 3);
      const s = client.responses.stream({ model: 'gpt-4o-mini', input: 'hello' });
      const deltas = [];
      s.on('response.output_text.delta', (e) => deltas.push(e.delta));
      const final = await s.finalResponse();
      assert.equal(deltas.length, 6);
      assert.equal(final.usage.output_tokens, 6);
      const raw = await client.responses.create({ model: 'gpt-4o-mini', input: 'hello', stream: true });
      const types = [];
      for await (const e of raw) types.push(e.type);
      assert.equal(types[0], 'response.created');
      assert.equal(types.at(-1), 'response.completed');
    });

    test('embeddings (default base64 and float)', async () => {
      sim.reset();
      const e = await client.embeddings.create({ model: 'text-embedding-3-small', input: ['a', 'b'] });
      assert.equal(e.data.length, 2);
      assert.equal(e.data[1].embedding.length, 8);
      assert.equal(e.data[0].embedding[0], 1 / 64);
      const f = await client.embeddings.create({ model: 'text-embedding-3-small', input: 'a', encoding_format: 'float' });
      assert.equal(f.data[0].embedding[1], 2 / 64);
      assert.equal(f.usage.prompt_tokens, 1);
    });

    test('errors, service tier, cached tokens, models', async () => {
      sim.reset();
      sim.set({ error: { status: 400, message: 'bad thing' } });
      try {
        await assert.rejects(client.chat.completions.create({ model: 'gpt-4o-mini', messages: [] }), (e) => e instanceof OpenAI.BadRequestError && e.status === 400 && /bad thing/.test(e.message));
      } finally {
        sim.set({ error: undefined });
      }
      sim.set({ cachedTokens: 5, promptTokens: 20 });
      try {
        const r = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }], service_tier: 'flex', max_tokens: 2 });
        assert.equal(r.service_tier, 'flex');
        assert.equal(r.usage.prompt_tokens_details.cached_tokens, 5);
        assert.equal(costNanos(sim.usages.at(-1)), 15 * 150 + 5 * 75 + 2 * 600);
      } finally {
        sim.set({ cachedTokens: 0, promptTokens: undefined });
      }
      const models = [];
      for await (const m of client.models.list()) models.push(m.id);
      assert.ok(models.includes('gpt-4o-mini'));
    });

    test('hang mode is bounded by the client timeout; gate holds responses', async () => {
      sim.reset();
      sim.set({ hang: true });
      try {
        await assert.rejects(client.chat.completions.create({ model: 'gpt-4o-mini', messages: [] }, { timeout: 200 }), OpenAI.APIConnectionTimeoutError);
      } finally {
        sim.set({ hang: false });
      }
      sim.hold();
      let done = false;
      const p = client.chat.completions.create({ model: 'gpt-4o-mini', messages: [] }).then(() => (done = true));
      await sim.waitForRequests(2, 2000);
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(done, false);
      sim.release();
      await p;
      assert.equal(done, true);
    });
  });
}
