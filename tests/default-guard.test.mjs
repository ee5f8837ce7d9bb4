// wrap(client) with no options: the process-wide guard from the environment. On a BURSORA_DB
// file it enforces the budgets other guards declared there by name.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startSim, sumCostNanos } from './support/openai-sim.mjs';
import { CLIENTS, clientFor } from './support/clients.mjs';
import { createBursora, wrap, sdk, BudgetExceededError, chatRequest, settled, spentNanos, rejectionOf } from './support/sdk.mjs';

const OpenAI = CLIENTS[0].OpenAI;

describe('the default guard (wrap(client) with no options)', { timeout: 20_000 }, () => {
  let sim;
  let dir;
  let declarer;
  before(async () => {
    sim = await startSim({ completionTokens: 4 });
    dir = mkdtempSync(join(tmpdir(), 'bursora-default-'));
    // Each test file runs in its own process, and the default guard is created on first use.
    process.env.BURSORA_DB = join(dir, 'ledger.sqlite');
    declarer = createBursora({
      db: process.env.BURSORA_DB,
      budgets: [
        { name: 'blocked-team', match: { team: 'blocked' }, limitUsd: 0, window: 'day' },
        { name: 'everything', limitUsd: 10, window: 'day' },
      ],
    });
  });
  after(async () => {
    await declarer.shutdown();
    await sdk.getDefaultBursora().shutdown();
    delete process.env.BURSORA_DB;
    await sim.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('is one guard for the process, on BURSORA_DB, enforcing budgets declared there', async () => {
    const a = wrap(clientFor(OpenAI, sim));
    const b = wrap(clientFor(OpenAI, sim));
    await a.chat.completions.create(chatRequest());
    await b.chat.completions.create(chatRequest());
    const err = await rejectionOf(() => sdk.withTags({ team: 'blocked' }, () => a.chat.completions.create(chatRequest())));
    assert.ok(err instanceof BudgetExceededError, String(err?.stack ?? err));
    assert.equal(err.budget.name, 'blocked-team');
    assert.equal(sim.count(), 2);
    await sdk.getDefaultBursora().flush();
    const e = await settled(declarer, 'everything');
    assert.equal(spentNanos(e), sumCostNanos(sim.usages));
    assert.equal(sdk.getDefaultBursora(), sdk.getDefaultBursora());
  });
});
