// The per-call native functions (`hot.*`, src/hot.rs) are plain N-API functions that read their
// arguments by hand: every malformed argument must come back as a JS error with a code, never a
// crash, and a well-formed call must reserve and settle like the SDK's own path.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const binding = require('../binding.cjs');
const { hot, NativeGuard, NativeTags } = binding;

const BODY = JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }], max_completion_tokens: 10 });
const newGuard = () =>
  new NativeGuard(JSON.stringify({ budgets: [{ name: 'all', limitUsd: 1, window: 'total' }, { name: 'per-agent', match: { agent: '*' }, limitUsd: 1, window: 'day' }] }));

function throwsCode(fn, code, pattern) {
  assert.throws(fn, (err) => {
    assert.equal(err.code, code, `code of ${err.message}`);
    if (pattern) assert.match(err.message, pattern);
    return true;
  });
}

test('hot.admit reserves, hot.finishResponse settles to the usage', async () => {
  const guard = newGuard();
  const tags = NativeTags.create(null, JSON.stringify({ agent: 'a1' }));
  const id = hot.admit(guard.slot, 0, BODY, tags.slot, 'https://api.openai.com/v1');
  assert.equal(typeof id, 'string');
  let rows = await guard.spend();
  assert.ok(rows.find((r) => r.name === 'all').reservedNanos > 0);
  assert.equal(rows.find((r) => r.name === 'per-agent').key, 'agent=a1');
  assert.equal(hot.finishResponse(guard.slot, id, JSON.stringify({ usage: { prompt_tokens: 8, completion_tokens: 2 } })), undefined);
  await guard.flush();
  rows = await guard.spend();
  const all = rows.find((r) => r.name === 'all');
  assert.equal(all.reservedNanos, 0);
  // gpt-4o-mini: $0.15 / M input, $0.60 / M output.
  assert.equal(all.spentNanos, 8 * 150 + 2 * 600);
  // A second ending of the same reservation is ignored, whatever its kind.
  hot.finishUnknown(guard.slot, id);
  hot.finishFailed(guard.slot, id);
  hot.finishPartial(guard.slot, id, 'more text');
  assert.equal(hot.keepAlive(guard.slot, id), false);
  await guard.flush();
  assert.equal((await guard.spend()).find((r) => r.name === 'all').spentNanos, 8 * 150 + 2 * 600);
  await guard.shutdown();
});

test('hot.admit without tags, with a null baseURL, and a refusal as a value', async () => {
  const guard = new NativeGuard(JSON.stringify({ budgets: [{ name: 'tiny', limitUsd: 0, window: 'total' }] }));
  const refused = hot.admit(guard.slot, 0, BODY, 0, null);
  assert.equal(refused.ok, false);
  assert.equal(refused.refusal.code, 'budget_exceeded');
  assert.equal(refused.refusal.budget.name, 'tiny');
  await guard.shutdown();
});

test('hot.countTokens counts with the model\'s tokenizer', () => {
  assert.equal(hot.countTokens('gpt-4o-mini', ''), 0);
  assert.equal(hot.countTokens('gpt-4o-mini', 'Hello world'), 2);
  assert.equal(hot.countTokens('gpt-4o-mini', 'héllo 👋'.repeat(100)) > 100, true);
});

test('malformed arguments are errors with a code, never a crash', async () => {
  const guard = newGuard();
  const g = guard.slot;
  throwsCode(() => hot.admit(g, 0, 42, 0, null), 'invalid_input', /request body must be a string/);
  throwsCode(() => hot.admit(g, 0, '{not json', 0, null), 'invalid_input', /not valid JSON/);
  throwsCode(() => hot.admit(g, 9, BODY, 0, null), 'invalid_input', /unknown endpoint 9/);
  throwsCode(() => hot.admit(g, '0', BODY, 0, null), 'invalid_input', /endpoint must be a number/);
  throwsCode(() => hot.admit(g, 0, BODY, 0, 7), 'invalid_input', /baseURL must be a string/);
  throwsCode(() => hot.admit(g, 0, BODY, 123456, null), 'config', /no live tag set has slot 123456/);
  throwsCode(() => hot.admit(123456, 0, BODY, 0, null), 'config', /no live guard has slot 123456/);
  throwsCode(() => hot.admit(), 'invalid_input', /guard slot must be a number/);
  throwsCode(() => hot.finishResponse(g, 'res_x'), 'invalid_input', /response must be a string/);
  throwsCode(() => hot.finishPartial(g, {}, 'text'), 'invalid_input', /reservation id must be a string/);
  throwsCode(() => hot.finishFailed(0, 'res_x'), 'config', /no live guard has slot 0/);
  throwsCode(() => hot.keepAlive(g, null), 'invalid_input', /reservation id must be a string/);
  throwsCode(() => hot.countTokens('gpt-4o-mini', 5), 'invalid_input', /text must be a string/);
  throwsCode(() => hot.countTokens(undefined, 'x'), 'invalid_input', /model must be a string/);
  // Unknown reservations are ignored (already finished, or never this guard's).
  assert.equal(hot.finishUnknown(g, 'res_unknown'), undefined);
  assert.equal(hot.keepAlive(g, 'res_unknown'), false);
  // Non-ASCII text goes through intact (UTF-8 read into a reused buffer).
  const body = JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'héllo 👋 '.repeat(500) }] });
  assert.equal(typeof hot.admit(g, 0, body, 0, null), 'string');
  // A body larger than the kept buffer (given back after the call), then a small one again.
  const big = JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x'.repeat(2 * 1024 * 1024) }] });
  assert.equal(typeof hot.admit(g, 0, big, 0, null), 'string');
  // The guard still works after all of that.
  assert.equal(typeof hot.admit(g, 0, BODY, 0, null), 'string');
  await guard.shutdown();
});

test('hot.finishChatUsage settles exactly as finishResponse with the JSON text', async () => {
  const fields = binding.chatUsageFields();
  assert.deepEqual(fields[0], ['prompt_tokens']);
  const read = (usage, path) => {
    let v = usage[path[0]];
    for (let i = 1; i < path.length; i++) v = v !== null && typeof v === 'object' ? v[path[i]] : undefined;
    return v;
  };
  const usages = [
    { prompt_tokens: 31, completion_tokens: 2, total_tokens: 33 },
    { prompt_tokens: 2000, completion_tokens: 300, prompt_tokens_details: { cached_tokens: 1024, audio_tokens: 0 }, completion_tokens_details: { reasoning_tokens: 200 } },
    { prompt_tokens: 10, completion_tokens: 1, prompt_tokens_details: null },
    { prompt_tokens: 10, completion_tokens: 1, prompt_tokens_details: 5 },
    { prompt_tokens: 10.5, completion_tokens: 1 }, // not a count: settles at the reservation
    { prompt_tokens: '10', completion_tokens: 1 },
    { prompt_tokens: -3, completion_tokens: 1 },
    { prompt_tokens: 10 }, // completion_tokens missing
    { prompt_tokens: 10, completion_tokens: NaN }, // JSON.stringify writes null: missing
    { prompt_tokens: 10, completion_tokens: 4, completion_tokens_details: { audio_tokens: Infinity } },
  ];
  for (const [i, usage] of usages.entries()) {
    const byJson = newGuard();
    const byValues = newGuard();
    for (const tier of [undefined, 'default', 'flex']) {
      const a = hot.admit(byJson.slot, 0, BODY, 0, null);
      hot.finishResponse(byJson.slot, a, JSON.stringify({ usage, service_tier: tier }));
      const b = hot.admit(byValues.slot, 0, BODY, 0, null);
      hot.finishChatUsage(byValues.slot, b, typeof tier === 'string' ? tier : null, ...fields.map((f) => read(usage, f)));
    }
    await byJson.flush();
    await byValues.flush();
    const spent = async (g) => (await g.spend()).find((r) => r.name === 'all');
    const [x, y] = [await spent(byJson), await spent(byValues)];
    assert.equal(y.spentNanos, x.spentNanos, `usage #${i}`);
    assert.equal(y.reservedNanos, 0);
    assert.ok(x.spentNanos > 0);
    await byJson.shutdown();
    await byValues.shutdown();
  }
  const guard = newGuard();
  throwsCode(() => hot.finishChatUsage(guard.slot, 7, null), 'invalid_input', /reservation id must be a string/);
  await guard.shutdown();
});
