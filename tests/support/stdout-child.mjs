// Child of tests/stdout.test.mjs: uses the SDK the way an app would, with default warning
// handling, including calls that raise a warning twice; prints nothing itself. It exits on its
// own: background work must not keep the process alive.

import OpenAI from 'openai';
import { wrap, createBursora } from './sdk.mjs';

const baseURL = process.argv[2];
const mode = process.argv[3] ?? 'guard';
const client = new OpenAI({ apiKey: 'sk-test', baseURL, maxRetries: 0, timeout: 5000 });
const request = (model) => ({ model, messages: [{ role: 'user', content: 'hi' }], max_completion_tokens: 5 });

if (mode === 'guard') {
  const bursora = createBursora({ budgets: [{ name: 'all', limitUsd: 1, window: 'day' }] });
  const c = bursora.wrap(client);
  await c.chat.completions.create(request('acme-llm-unknown-9'));
  await c.chat.completions.create(request('acme-llm-unknown-9'));
  await c.chat.completions.create(request('gpt-4o-mini'));
  const s = await c.chat.completions.create({ ...request('gpt-4o-mini'), stream: true });
  for await (const _ of s);
  await bursora.spend();
} else {
  // wrap() with no options: the process-wide default guard from the environment.
  const c = wrap(client);
  await c.chat.completions.create(request('acme-llm-unknown-9'));
  await c.chat.completions.create(request('acme-llm-unknown-9'));
  await c.chat.completions.create(request('gpt-4o-mini'));
}
