// Child of tests/server-mode.test.mjs: makes calls in server mode (BURSORA_ENDPOINT /
// BURSORA_API_KEY from the environment, through the default guard) and returns without flush()
// or shutdown(); the settlements must reach bursora-server before the process exits.

import OpenAI from 'openai';
import { wrap } from './sdk.mjs';

const [baseURL] = process.argv.slice(2);
const client = wrap(new OpenAI({ apiKey: 'sk-test', baseURL, maxRetries: 0, timeout: 5000 }));
const req = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hello from a child' }], max_completion_tokens: 40 };
await client.chat.completions.create(req);
await Promise.all([client.chat.completions.create(req), client.chat.completions.create(req)]);
const s = await client.chat.completions.create({ ...req, stream: true });
for await (const _ of s);
