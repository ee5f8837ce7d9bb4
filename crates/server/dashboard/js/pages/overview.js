// Overview: month to date, burn rate and where the month ends at that rate, spend per day,
// the top models and tag values, budgets closest to their limit, and the latest calls.

import { barChart, sparkline } from "../charts.js";
import { codeBlock, h, replace } from "../dom.js";
import {
  DAY_MS,
  HOUR_MS,
  count,
  day,
  share,
  startOfNextUtcMonth,
  startOfUtcDay,
  startOfUtcMonth,
  usd,
} from "../format.js";
import { breakdown, budgetsAndCounters, changeWatcher, events, series, tagKeys, utilization } from "../queries.js";
import { card, eventsTable, missingRoute, pageHeader, resetText, utilBar } from "../views.js";

export const title = "Overview";

const TOP = 5;

/** Sums `points` by `key(p)`: `[{key, spent_nanos, calls}]`, in first-seen order. */
function sumBy(points, key) {
  const out = new Map();
  for (const p of points) {
    const k = key(p);
    const acc = out.get(k) ?? { key: k, spent_nanos: 0, calls: 0 };
    acc.spent_nanos += p.spent_nanos;
    acc.calls += p.calls ?? 0;
    out.set(k, acc);
  }
  return [...out.values()];
}

async function load(api) {
  const now = Date.now();
  const today = startOfUtcDay(now);
  const monthStart = startOfUtcMonth(now);
  const from = Math.min(today - 29 * DAY_MS, monthStart);
  const hourStart = Math.floor(now / HOUR_MS) * HOUR_MS;
  // Spend per day *and model* in one query: it gives the daily chart and the top models, one
  // scan of the month on the server instead of two.
  const [byModel, hourly, bc, recent] = await Promise.all([
    series(api, { bucket: "day", from, to: now, groupBy: "model" }),
    series(api, { bucket: "hour", from: hourStart - 23 * HOUR_MS, to: now }),
    budgetsAndCounters(api),
    events(api, { limit: 100 }),
  ]);
  // One tag key (the one budgets match on, else the commonest): each breakdown scans the month.
  const keys = tagKeys(bc.budgets, recent.events).slice(0, 1);
  const tags = await Promise.all(
    keys.map(async (key) => ({
      key,
      result: await breakdown(api, { groupBy: `tag:${key}`, from: today - 29 * DAY_MS, to: now, limit: TOP }),
    })),
  );
  let daily = byModel;
  let models = byModel;
  if (!byModel.missing) {
    const points = byModel.points ?? [];
    daily = { points: sumBy(points, (p) => p.start_ms).map((d) => ({ start_ms: d.key, spent_nanos: d.spent_nanos, calls: d.calls })) };
    const groups = sumBy(
      points.filter((p) => p.start_ms >= today - 29 * DAY_MS),
      (p) => p.value ?? null,
    )
      .map((g) => ({ value: g.key, spent_nanos: g.spent_nanos, calls: g.calls }))
      .sort((a, b) => b.spent_nanos - a.spent_nanos)
      .slice(0, TOP);
    models = { group_by: "model", groups };
  }
  return { now, today, monthStart, daily, hourly, models, tags, ...bc, recent };
}

/** Month-to-date, today, 7-day burn rate and the month's end at that rate, in nano-USD. */
export function figures(d) {
  const points = d.daily.points ?? [];
  const mtd = points.filter((p) => p.start_ms >= d.monthStart).reduce((a, p) => a + p.spent_nanos, 0);
  const today = points.filter((p) => p.start_ms >= d.today).reduce((a, p) => a + p.spent_nanos, 0);
  // Over the last 7 days (6 whole UTC days and today so far), or since the first day with spend
  // on a younger project, but never over less than a day: an hour of traffic says little about
  // a night, and would project wildly.
  const weekStart = d.today - 6 * DAY_MS;
  const recentDays = points.filter((p) => p.start_ms >= weekStart);
  const week = recentDays.reduce((a, p) => a + p.spent_nanos, 0);
  const firstDay = recentDays.find((p) => p.spent_nanos > 0)?.start_ms;
  const spanMs = firstDay === undefined ? 0 : Math.max(DAY_MS, d.now - firstDay);
  const perDay = spanMs > 0 ? (week / spanMs) * DAY_MS : 0;
  const hours = d.hourly.points ?? [];
  const left = startOfNextUtcMonth(d.now) - d.now;
  const projected = mtd + (perDay * left) / DAY_MS;
  const calls = points.filter((p) => p.start_ms >= d.monthStart).reduce((a, p) => a + (p.calls ?? 0), 0);
  const byHour = new Map(hours.map((p) => [p.start_ms, p.spent_nanos]));
  const hourNow = Math.floor(d.now / HOUR_MS) * HOUR_MS;
  const last24 = Array.from({ length: 24 }, (_, i) => byHour.get(hourNow - (23 - i) * HOUR_MS) ?? 0);
  const young = firstDay !== undefined && firstDay > weekStart;
  return { mtd, today, perDay, projected, calls, last24, young };
}

function kpi(label, value, sub, extra) {
  return h("div", { class: "kpi" }, h("div", { class: "kpi-label" }, label), h("div", { class: "kpi-value" }, value), sub ? h("div", { class: "kpi-sub" }, sub) : null, extra);
}

function topList(title, result, label) {
  if (result.missing) return card(title, missingRoute("spend breakdowns"));
  const groups = result.groups ?? [];
  const total = groups.reduce((a, g) => a + g.spent_nanos, 0);
  if (!groups.length) return card(title, h("p", { class: "muted" }, "No spend in the last 30 days."));
  return card(
    title,
    h(
      "ol",
      { class: "toplist" },
      groups.map((g) =>
        h(
          "li",
          null,
          h("span", { class: "name" }, g.value ?? h("em", null, `(no ${label})`)),
          h("span", { class: "num" }, usd(g.spent_nanos)),
          h("span", { class: "bar-track" }, h("span", { class: "bar-fill", style: { width: `${total ? (g.spent_nanos / groups[0].spent_nanos) * 100 : 0}%` } })),
          h("span", { class: "sub num" }, `${count(g.calls)} calls`),
        ),
      ),
    ),
    h("a", { href: `#/spend?group_by=${encodeURIComponent(result.group_by ?? "model")}`, class: "more-link" }, `Explore spend by ${label}`),
  );
}

function onboarding(api, noBudgets) {
  const snippet = `import OpenAI from "openai";
import { createBursora } from "@bursora/sdk";

const bursora = createBursora({
  endpoint: "${location.origin}",
  apiKey: process.env.BURSORA_API_KEY, // a project key (bsk_…)
});
export const openai = bursora.wrap(new OpenAI());`;
  return card(
    "Get your first spend here",
    h("p", null, "Nothing has been spent in this project yet. Three steps and every LLM call is reserved before it goes out, then shows up here within seconds:"),
    h(
      "ol",
      { class: "steps" },
      h("li", null, api.isAdmin ? h("a", { href: "#/keys" }, "Create a project key") : "Use this project's key", " and set it as BURSORA_API_KEY where your app runs."),
      h("li", null, "Wrap your OpenAI client:"),
    ),
    codeBlock(snippet, "Copy snippet"),
    h(
      "ol",
      { class: "steps", start: 3 },
      h(
        "li",
        null,
        noBudgets ? h("a", { href: "#/budgets" }, "Create a budget") : h("a", { href: "#/budgets" }, "Check your budgets"),
        ", for example $50 a day for the whole project, or $5 a day per tenant_id. Calls that do not fit are blocked before the provider sees them.",
      ),
    ),
  );
}

function draw(api, root, d) {
  const f = figures(d);
  const missing = d.daily.missing;
  const noSpend = !missing && f.mtd === 0 && (d.daily.points ?? []).every((p) => !p.spent_nanos) && !(d.recent.events ?? []).length;
  const atRisk = [...d.counters].sort((a, b) => utilization(b) - utilization(a)).slice(0, TOP);
  const { table } = eventsTable((d.recent.events ?? []).slice(0, 8), "Latest calls", { compact: true });
  // Every day of the last 30, empty ones too, so gaps read as gaps.
  const byDay = new Map((d.daily.points ?? []).map((p) => [p.start_ms, p]));
  const days = Array.from({ length: 30 }, (_, i) => {
    const start = d.today - (29 - i) * DAY_MS;
    const p = byDay.get(start);
    return { start_ms: start, total_nanos: p?.spent_nanos ?? 0, calls: p?.calls ?? 0 };
  });

  replace(
    root,
    h(
      "section",
      { class: "page" },
      pageHeader("Overview", "Spend this month, how fast it burns and what your budgets allow."),
      missing ? missingRoute("spend history (GET /v1/spend/series)") : null,
      noSpend ? onboarding(api, !d.budgets.length) : null,
      h(
        "div",
        { class: "kpis" },
        kpi("Month to date", usd(f.mtd), `${count(f.calls)} calls`),
        kpi("Today", usd(f.today), "since 00:00 UTC"),
        kpi("Burn rate", `${usd(f.perDay)}/day`, f.young ? "average since the first call" : "average of the last 7 days", sparkline(f.last24, `Spend per hour over the last 24 hours`)),
        kpi("Projected month end", usd(f.projected), "month to date plus the burn rate until the 1st"),
      ),
      card(
        "Spend per day",
        missing
          ? h("p", { class: "muted" }, "Not available on this server.")
          : days.some((p) => p.total_nanos > 0)
            ? barChart({ points: days, formatX: day, title: "Spend per day, last 30 days" })
            : h("p", { class: "muted" }, "No spend in the last 30 days yet."),
      ),
      h(
        "div",
        { class: "grid-3" },
        topList("Top models", d.models, "model"),
        d.tags.length
          ? d.tags.map((t) => topList(`Top ${t.key}`, t.result, t.key))
          : card("Top tags", h("p", { class: "muted" }, "No tags yet. Tag calls with withTags({ tenant_id, agent_id }, fn) to see who spends.")),
      ),
      h(
        "div",
        { class: "grid-2" },
        card(
          "Budgets closest to their limit",
          atRisk.length
            ? h(
                "ul",
                { class: "risk" },
                atRisk.map((c) =>
                  h(
                    "li",
                    null,
                    h("div", { class: "risk-head" }, h("span", { class: "name" }, c.name, c.key ? h("span", { class: "sub" }, ` ${c.key}`) : null), h("span", { class: "num" }, share(c.spent_nanos + c.reserved_nanos, c.limit_nanos))),
                    utilBar(c),
                    h("div", { class: "sub" }, `${usd(c.spent_nanos)} of ${usd(c.limit_nanos)} per ${c.window} · `, resetText(c, d.now)),
                  ),
                ),
              )
            : h("p", { class: "muted" }, "No budgets yet. ", h("a", { href: "#/budgets" }, "Create one"), " to cap spend before calls go out."),
        ),
        card(
          "Latest calls",
          d.recent.missing
            ? missingRoute("call history (GET /v1/events)")
            : (d.recent.events ?? []).length
              ? [table, h("a", { href: "#/activity?view=all", class: "more-link" }, "All calls")]
              : h("p", { class: "muted" }, "No calls yet. They appear here as they happen."),
        ),
      ),
    ),
  );
}

/** What the page shows, without the clock: equal snapshots draw the same page. */
function snapshot(d) {
  const { now, today, monthStart, ...shown } = d;
  return JSON.stringify(shown);
}

export async function mount(ctx, root) {
  let d = await load(ctx.api);
  if (!ctx.isCurrent()) return {};
  performance.mark("bursora:data"); // every answer is in: the rest is drawing (bench/dashboard.mjs)
  draw(ctx.api, root, d);
  const changed = changeWatcher(ctx.api);
  await changed();
  return {
    async tick() {
      if (!(await changed())) return;
      const next = await load(ctx.api);
      if (!ctx.isCurrent() || snapshot(next) === snapshot(d)) return;
      d = next;
      const focused = root.contains(document.activeElement) ? document.activeElement.getAttribute("href") : null;
      draw(ctx.api, root, d);
      if (focused) root.querySelector(`[href="${CSS.escape(focused)}"]`)?.focus();
    },
  };
}
