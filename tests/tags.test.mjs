// withTags(): scopes merge (inner wins), follow async work, and feed template budgets (one
// counter per tag value). Invalid tags are a TypeError where they are given.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { startSim, costNanos } from './support/openai-sim.mjs';
import { CLIENTS, clientFor } from './support/clients.mjs';
import { createBursora, wrap, withTags, currentTags, BudgetExceededError, chatRequest, probeBound, settled, findEntry, keyIs, spentNanos, rejectionOf } from './support/sdk.mjs';

const OpenAI = CLIENTS[0].OpenAI;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

describe('withTags', { timeout: 30_000 }, () => {
  let sim;
  let bursora;
  let client;
  let cost; // every call below is the same request: one true cost
  before(async () => {
    sim = await startSim({ completionTokens: 3, promptTokens: 20 });
    bursora = createBursora({
      budgets: [
        { name: 'per-agent', match: { agent: '*' }, limitUsd: 10, window: 'day' },
        { name: 'per-team', match: { team: '*' }, limitUsd: 10, window: 'day' },
      ],
      tags: { team: 'default-team' },
    });
    client = bursora.wrap(clientFor(OpenAI, sim));
    cost = costNanos({ input: 20, cached: 0, output: 3 });
  });
  after(async () => {
    await bursora.shutdown();
    await sim.close();
  });

  const call = () => client.chat.completions.create(chatRequest());
  const spentBy = async (budget, value) => {
    const e = await settled(bursora, budget, value);
    return spentNanos(e) / cost;
  };

  test('nested scopes merge; the inner value wins; default tags apply underneath', async () => {
    await withTags({ agent: 'outer', team: 'red' }, () =>
      withTags({ agent: 'inner' }, async () => {
        await call();
      }),
    );
    assert.equal(await spentBy('per-agent', 'inner'), 1);
    assert.equal(await spentBy('per-team', 'red'), 1);
    assert.equal((await bursora.spend()).filter((e) => e.name === 'per-agent' && keyIs(e, 'outer')).length, 0);
    // No scope: only the wrap/createBursora default tag.
    await call();
    assert.equal(await spentBy('per-team', 'default-team'), 1);
    assert.equal(sim.usages.every((u) => costNanos(u) === cost), true);
  });

  test('withTags returns fn\'s value, sync or promise; currentTags() shows the merged scope', async () => {
    assert.deepEqual(currentTags(), {});
    withTags({ a: '1', b: '1' }, () =>
      withTags({ b: '2' }, () => {
        assert.deepEqual(currentTags(), { a: '1', b: '2' });
        assert.ok(Object.isFrozen(currentTags()));
      }),
    );
    assert.equal(withTags({ agent: 'x' }, () => 42), 42);
    assert.equal(await withTags({ agent: 'x' }, async () => 43), 43);
  });

  test('scopes survive await, Promise.all, setTimeout and EventEmitter callbacks, and do not leak', async () => {
    await withTags({ agent: 'awaits' }, async () => {
      await sleep(5);
      await call();
      await sleep(1);
      await call();
    });
    await withTags({ agent: 'all' }, () => Promise.all([call(), call(), call()]));
    await Promise.all([withTags({ agent: 'c1' }, call), withTags({ agent: 'c2' }, () => sleep(3).then(call)), withTags({ agent: 'c3' }, call)]);
    await withTags({ agent: 'timer' }, () => new Promise((resolve, reject) => setTimeout(() => call().then(resolve, reject), 5)));
    await withTags({ agent: 'emitter' }, () => {
      const ee = new EventEmitter();
      const done = new Promise((resolve, reject) => ee.on('go', () => call().then(resolve, reject)));
      setImmediate(() => ee.emit('go'));
      return done;
    });
    // Outside every scope, a call made from a timer set outside has no agent tag.
    await new Promise((resolve, reject) => setTimeout(() => call().then(resolve, reject), 1));

    assert.equal(await spentBy('per-agent', 'awaits'), 2);
    assert.equal(await spentBy('per-agent', 'all'), 3);
    assert.equal(await spentBy('per-agent', 'c1'), 1);
    assert.equal(await spentBy('per-agent', 'c2'), 1);
    assert.equal(await spentBy('per-agent', 'c3'), 1);
    assert.equal(await spentBy('per-agent', 'timer'), 1);
    assert.equal(await spentBy('per-agent', 'emitter'), 1);
  });

  test('a template budget gives each tenant its own counter; calls without the key are not matched', async (t) => {
    sim.reset();
    const { nanos: bound } = await probeBound(sim, () => clientFor(OpenAI, sim), (c) => c.chat.completions.create(chatRequest()));
    const perTenant = createBursora({ budgets: [{ name: 'per-tenant', match: { tenant_id: '*' }, limitUsd: (bound + Math.floor(bound / 2)) / 1e9, window: 'day' }] });
    t.after(() => perTenant.shutdown());
    const c = perTenant.wrap(clientFor(OpenAI, sim));
    const as = (tenant) => withTags({ tenant_id: tenant }, () => c.chat.completions.create(chatRequest()));
    // Hold responses: acme's first call stays reserved while its second asks for room.
    sim.hold();
    t.after(() => sim.release());
    const first = as('acme');
    await sim.waitForRequests(1);
    const err = await rejectionOf(() => as('acme'));
    assert.ok(err instanceof BudgetExceededError, String(err));
    assert.equal(err.budget.name, 'per-tenant');
    assert.match(err.budget.key ?? 'tenant_id=acme', /acme/);
    assert.equal(err.tags?.tenant_id, 'acme');
    const other = as('globex'); // another tenant has its own headroom
    await sim.waitForRequests(2);
    sim.release();
    await Promise.all([first, other]);
    await c.chat.completions.create(chatRequest()); // no tenant_id: not matched
    await c.chat.completions.create(chatRequest());
    assert.equal(sim.count(), 4);
    await perTenant.flush();
    const entries = (await perTenant.spend()).filter((e) => e.name === 'per-tenant');
    assert.equal(entries.length, 2, JSON.stringify(entries));
    const acme = findEntry(entries, 'per-tenant', 'acme');
    const globex = findEntry(entries, 'per-tenant', 'globex');
    assert.equal(spentNanos(acme), cost);
    assert.equal(spentNanos(globex), cost);
    assert.deepEqual(acme.match, { tenant_id: '*' });
    assert.equal(acme.limitUsd, globex.limitUsd);
  });

  test('invalid tags are a TypeError at withTags(), and fn never runs', () => {
    let ran = false;
    const fn = () => {
      ran = true;
    };
    const bad = {
      'bad key chars': { 'bad key!': 'v' },
      'empty key': { '': 'v' },
      'key over 64 bytes': { ['k'.repeat(65)]: 'v' },
      '33 tags': Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`k${i}`, 'v'])),
      '257-byte value': { k: 'x'.repeat(257) },
      '257-byte value in multibyte characters': { k: 'é'.repeat(128) + 'x' },
      'non-string value': { k: 5 },
    };
    for (const [what, tags] of Object.entries(bad)) {
      assert.throws(() => withTags(tags, fn), TypeError, what);
    }
    assert.equal(ran, false);
    // The limits themselves are allowed.
    const ok = Object.fromEntries(Array.from({ length: 32 }, (_, i) => [`k${i}`, 'v']));
    withTags(ok, fn);
    withTags({ ['k'.repeat(64)]: 'x'.repeat(256), 'a.b:c-d_e': 'é'.repeat(128) }, fn);
    assert.equal(ran, true);
  });

  test('a nested scope that pushes the merged set past 32 tags is a TypeError at that withTags()', () => {
    const outer = Object.fromEntries(Array.from({ length: 32 }, (_, i) => [`k${i}`, 'v']));
    withTags(outer, () => {
      withTags({ k0: 'override' }, () => {}); // same key: still 32
      assert.throws(() => withTags({ extra: 'v' }, () => {}), TypeError);
    });
  });

  test('invalid default tags are a TypeError at wrap()/createBursora()', () => {
    assert.throws(() => wrap(clientFor(OpenAI, sim), { budgets: [], tags: { 'no spaces': 'v' } }), TypeError);
    assert.throws(() => createBursora({ tags: { k: 'x'.repeat(257) } }), TypeError);
  });
});
