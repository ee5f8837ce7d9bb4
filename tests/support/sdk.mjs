// The built package (`npm run build` output), and helpers shared by the SDK tests.

import assert from 'node:assert/strict';
import { toNanos } from './openai-sim.mjs';

export const SDK_URL = new URL('../../dist/index.mjs', import.meta.url);
export const sdk = await import(SDK_URL.href);
export const { wrap, withTags, currentTags, createBursora, BudgetExceededError, BursoraError, BursoraConfigError, UnknownModelError } = sdk;

export const MODEL = 'gpt-4o-mini';

/** A small chat request whose upper bound is dominated by a known max_completion_tokens. */
export function chatRequest(extra = {}) {
  return {
    model: MODEL,
    messages: [
      { role: 'system', content: 'You are terse.' },
      { role: 'user', content: 'Summarise the ticket in one line.' },
    ],
    max_completion_tokens: 50,
    ...extra,
  };
}

/**
 * The SDK's upper bound for a call, in nano-USD, read from the `estimatedUsd` of the
 * BudgetExceededError a $0 budget raises for it. Also checks the refusal reached no server.
 */
export async function probeBound(sim, makeClient, call) {
  const probe = createBursora({ budgets: [{ name: 'probe-zero', limitUsd: 0, window: 'total' }], onWarning: () => {} });
  try {
    const before = sim.count();
    const client = probe.wrap(makeClient());
    const err = await Promise.resolve()
      .then(() => call(client))
      .then(
        () => assert.fail('a $0 budget admitted a call'),
        (e) => e,
      );
    assert.ok(err instanceof BudgetExceededError, `expected BudgetExceededError, got ${err?.stack ?? err}`);
    assert.equal(sim.count(), before, 'a refused call reached the server');
    const nanos = toNanos(err.estimatedUsd);
    assert.ok(nanos > 0, 'estimatedUsd must be positive');
    return { nanos, error: err };
  } finally {
    await probe.shutdown();
  }
}

/** Whether a spend() entry of a template budget is the counter for tag value `value`. */
export function keyIs(entry, value) {
  const k = entry.key;
  if (k == null) return false;
  if (typeof k === 'string') return k === value || k.endsWith(`=${value}`) || k.endsWith(`:${value}`);
  if (typeof k === 'object') return Object.values(k).includes(value);
  return false;
}

/** The spend() entry of budget `name` (and template key `value` when given). */
export function findEntry(entries, name, value) {
  const matches = entries.filter((e) => e.name === name && (value === undefined || keyIs(e, value)));
  assert.equal(matches.length, 1, `expected one spend() entry for ${name}${value === undefined ? '' : ` / ${value}`}, got ${JSON.stringify(entries)}`);
  return matches[0];
}

/**
 * flush(), then spend() until the budget holds no reservation (a settlement may be handed over
 * a tick after the caller saw the end of a stream), bounded by `timeoutMs`.
 */
export async function settled(bursora, name, value, timeoutMs = 3000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    await bursora.flush();
    const entries = await bursora.spend();
    const e = findEntry(entries, name, value);
    if (e.spentNanos !== undefined) assert.equal(toNanos(e.spentUsd), e.spentNanos, 'spentUsd disagrees with spentNanos');
    if (reservedNanos(e) === 0 || Date.now() > deadline) return e;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Spent / reserved nano-USD of an entry (the exact integer field when the entry has one). */
export const spentNanos = (e) => e.spentNanos ?? toNanos(e.spentUsd);
export const reservedNanos = (e) => e.reservedNanos ?? toNanos(e.reservedUsd);

/** Rejection value of a promise (fails if it resolves). */
export async function rejectionOf(promiseOrFn) {
  try {
    await (typeof promiseOrFn === 'function' ? promiseOrFn() : promiseOrFn);
  } catch (e) {
    return e;
  }
  assert.fail('expected a rejection');
}

/** Polls `cond` until true, every 5 ms, failing after `timeoutMs`. */
export async function waitUntil(cond, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
