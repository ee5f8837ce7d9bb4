// A child process of tests/concurrency.test.mjs: shares one SQLite ledger with its siblings,
// fires its share of calls at once and reports every refusal to the parent as it happens.

import { clientFor, CLIENTS } from './clients.mjs';
import { createBursora, BudgetExceededError, chatRequest } from './sdk.mjs';

const send = (msg) => new Promise((resolve) => process.send(msg, resolve));

process.once('message', async ({ baseURL, db, budget, calls, clientName }) => {
  try {
    const { OpenAI } = CLIENTS.find((c) => c.name === clientName);
    const bursora = createBursora({ db, budgets: [budget], onWarning: () => {} });
    const client = bursora.wrap(clientFor(OpenAI, { baseURL }, { timeout: 30_000 }));
    let ok = 0;
    let refused = 0;
    const errors = [];
    await Promise.all(
      Array.from({ length: calls }, () =>
        (async () => client.chat.completions.create(chatRequest()))().then(
          () => ok++,
          (e) => {
            if (e instanceof BudgetExceededError) {
              refused++;
              process.send({ type: 'refused' });
            } else errors.push(String(e?.stack ?? e));
          },
        ),
      ),
    );
    await bursora.flush();
    await bursora.shutdown();
    await send({ type: 'done', ok, refused, errors });
  } catch (e) {
    await send({ type: 'done', ok: 0, refused: 0, errors: [String(e?.stack ?? e)] });
  }
  process.disconnect();
});
