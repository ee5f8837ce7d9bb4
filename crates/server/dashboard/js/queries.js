// The read queries pages share, over GET /v1/spend/series, /v1/spend/breakdown, /v1/events,
// /v1/budgets and /v1/spend. A server without a route (older than the page) answers 404
// `no such route`: those come back as `{ missing: true }` so a page can say so and go on.

import { isMissingRoute } from "./api.js";

async function orMissing(promise) {
  try {
    return await promise;
  } catch (e) {
    if (isMissingRoute(e)) return { missing: true };
    throw e;
  }
}

/** `{bucket, points: [{start_ms, value?, spent_nanos, calls}]}`. */
export function series(api, { bucket, from, to, groupBy }) {
  return orMissing(api.get("/v1/spend/series", { bucket, from, to, group_by: groupBy }));
}

/** `{group_by, from_ms, to_ms, groups: [{value, spent_nanos, calls}]}`, biggest first. */
export function breakdown(api, { groupBy, from, to, limit }) {
  return orMissing(api.get("/v1/spend/breakdown", { group_by: groupBy, from, to, limit }));
}

/** `{events: [...], next_cursor}`, newest first. */
export function events(api, { kind, overrun, from, to, limit, cursor } = {}) {
  return orMissing(
    api.get("/v1/events", { kind, overrun: overrun ? "true" : undefined, from, to, limit, cursor }),
  );
}

export async function budgetsAndCounters(api) {
  const [{ budgets }, { budgets: counters }] = await Promise.all([api.get("/v1/budgets"), api.get("/v1/spend")]);
  return { budgets, counters };
}

/** Tag keys worth grouping by: those budgets match on, then those seen on recent calls. */
export function tagKeys(budgets, recentEvents) {
  const seen = new Map();
  const bump = (k, n) => {
    if (k === "provider" || k === "model") return;
    seen.set(k, (seen.get(k) ?? 0) + n);
  };
  for (const b of budgets ?? []) for (const k of Object.keys(b.match ?? {})) bump(k, 1000);
  for (const e of recentEvents ?? []) for (const k of Object.keys(e.tags ?? {})) bump(k, 1);
  return [...seen.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).map(([k]) => k);
}

/** A counter's use of its limit, 0..∞ (spent plus reserved over the limit). */
export function utilization(c) {
  return c.limit_nanos > 0 ? (c.spent_nanos + c.reserved_nanos) / c.limit_nanos : c.spent_nanos + c.reserved_nanos > 0 ? Infinity : 0;
}

/** The amount an event is about: what a refused call asked for, else what was reserved. */
export function requested(e) {
  return e.requested_nanos ?? e.reserved_nanos ?? 0;
}

/** A fingerprint of the newest events: when it changes, something new happened. */
export function fingerprint(list) {
  return (list ?? []).map((e) => `${e.id}:${e.kind}:${e.actual_nanos ?? ""}`).join("|");
}

/**
 * A cheap "did anything happen?" check for live pages: the newest calls' fingerprint (or the
 * counters, on a server without /v1/events). Resolves true when it changed since last time,
 * and every `every`-th time anyway (usage reported late lands in the past, not on top).
 */
export function changeWatcher(api, every = 15) {
  let seen = null;
  let polls = 0;
  return async () => {
    polls += 1;
    let now;
    const recent = await events(api, { limit: 20 });
    if (recent.missing) now = JSON.stringify((await api.get("/v1/spend")).budgets);
    else now = fingerprint(recent.events);
    const changed = seen !== null && (now !== seen || polls % every === 0);
    seen = now;
    return changed;
  };
}
