// The SQLite ledger file: budgets are shared by name, a changed declaration is announced, and a
// process that exits without flush() still leaves its settlements in the file.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startSim, sumCostNanos } from './support/openai-sim.mjs';
import { CLIENTS, clientFor } from './support/clients.mjs';
import { createBursora, chatRequest, findEntry, settled, spentNanos, reservedNanos } from './support/sdk.mjs';

const OpenAI = CLIENTS[0].OpenAI;

describe('SQLite ledger file', { timeout: 40_000 }, () => {
  let sim;
  let dir;
  before(async () => {
    sim = await startSim({ completionTokens: 6 });
    dir = mkdtempSync(join(tmpdir(), 'bursora-file-'));
  });
  after(async () => {
    await sim.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('two guards on one file share a budget by name; a changed limit is announced and applies to both', async (t) => {
    sim.reset();
    const db = join(dir, 'shared.sqlite');
    const w1 = [];
    const w2 = [];
    const g1 = createBursora({ db, budgets: [{ name: 'team', limitUsd: 1, window: 'day' }], onWarning: (w) => w1.push(w) });
    t.after(() => g1.shutdown());
    await g1.wrap(clientFor(OpenAI, sim)).chat.completions.create(chatRequest());
    const g2 = createBursora({ db, budgets: [{ name: 'team', limitUsd: 2, window: 'day' }], onWarning: (w) => w2.push(w) });
    t.after(() => g2.shutdown());
    await g2.wrap(clientFor(OpenAI, sim)).chat.completions.create(chatRequest());
    assert.deepEqual(w1.filter((w) => w.code === 'budget_changed'), []);
    const changed = w2.filter((w) => w.code === 'budget_changed');
    assert.equal(changed.length, 1, JSON.stringify(w2));
    assert.match(changed[0].message, /team/);
    await g1.flush();
    const e1 = await settled(g1, 'team');
    const e2 = await settled(g2, 'team');
    assert.equal(e1.limitUsd, 2);
    assert.equal(e2.limitUsd, 2);
    assert.equal(e1.id, e2.id);
    assert.equal(spentNanos(e1), sumCostNanos(sim.usages));
    assert.equal(spentNanos(e2), spentNanos(e1));
  });

  test('a process that exits without flush() leaves every settlement in the file', async () => {
    sim.reset();
    const db = join(dir, 'exit.sqlite');
    const child = spawn(process.execPath, [new URL('./support/exit-child.mjs', import.meta.url).pathname, sim.baseURL, db, '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const code = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`child did not exit: ${stderr}`));
      }, 15_000);
      child.on('exit', (c) => {
        clearTimeout(timer);
        resolve(c);
      });
    });
    assert.equal(code, 0, stderr);
    assert.equal(sim.usages.length, 4);
    const reader = createBursora({ db, budgets: [{ name: 'file-budget', limitUsd: 1, window: 'day' }] });
    try {
      const e = findEntry(await reader.spend(), 'file-budget');
      assert.equal(reservedNanos(e), 0, 'reservations of an exited process are still held');
      assert.equal(spentNanos(e), sumCostNanos(sim.usages));
    } finally {
      await reader.shutdown();
    }
  });
});
