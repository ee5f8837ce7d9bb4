// Child of tests/ledger-file.test.mjs: makes calls on a SQLite ledger and returns without
// flush() or shutdown(); the guard must settle them before the process exits.

import OpenAI from 'openai';
import { createBursora } from './sdk.mjs';

const [baseURL, db, limitUsd] = process.argv.slice(2);
const bursora = createBursora({ db, budgets: [{ name: 'file-budget', limitUsd: Number(limitUsd), window: 'day' }], onWarning: () => {} });
const client = bursora.wrap(new OpenAI({ apiKey: 'sk-test', baseURL, maxRetries: 0, timeout: 5000 }));
const req = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hello from a child' }], max_completion_tokens: 40 };
await client.chat.completions.create(req);
await Promise.all([client.chat.completions.create(req), client.chat.completions.create(req)]);
const s = await client.chat.completions.create({ ...req, stream: true });
for await (const _ of s);
