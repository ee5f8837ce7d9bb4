// A child process of the server-mode race tests: one SDK process in server mode, firing its share
// of calls at once, reporting each refusal as it happens and its totals at the end.

import { clientFor, CLIENTS } from './clients.mjs';
import { createBursora, BudgetExceededError, chatRequest } from './sdk.mjs';

const send = (msg) => new Promise((resolve) => process.send(msg, resolve));

process.once('message', async ({ baseURL, endpoint, apiKey, calls, clientName, failMode = 'closed', reservationTtlMs, concurrency, decisionTimeoutMs }) => {
  try {
    const { OpenAI } = CLIENTS.find((c) => c.name === clientName);
    const options = { endpoint, apiKey, failMode, onWarning: () => {} };
    if (reservationTtlMs !== undefined) options.reservationTtlMs = reservationTtlMs;
    if (decisionTimeoutMs !== undefined) options.decisionTimeoutMs = decisionTimeoutMs;
    const bursora = createBursora(options);
    const client = bursora.wrap(clientFor(OpenAI, { baseURL }, { timeout: 60_000 }));
    let ok = 0;
    let refused = 0;
    const errors = [];
    await send({ type: 'ready' });
    let unavailable = 0;
    const one = () =>
      (async () => client.chat.completions.create(chatRequest()))().then(
        () => ok++,
        (e) => {
          if (e instanceof BudgetExceededError) {
            refused++;
            process.send({ type: 'refused' });
          } else if (e?.code === 'budget_unavailable') {
            unavailable++;
            process.send({ type: 'unavailable' });
          }
          else errors.push(String(e?.stack ?? e));
        },
      );
    // All at once, or `concurrency` lanes of sequential calls (a sustained load).
    const lanes = concurrency ?? calls;
    let next = 0;
    await Promise.all(
      Array.from({ length: Math.min(lanes, calls) }, async () => {
        while (next < calls) {
          next++;
          await one();
        }
      }),
    );
    await bursora.shutdown();
    await send({ type: 'done', ok, refused, unavailable, errors });
  } catch (e) {
    await send({ type: 'done', ok: 0, refused: 0, errors: [String(e?.stack ?? e)] });
  }
  process.disconnect();
});
