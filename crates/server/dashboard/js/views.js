// Pieces several pages show: status badges, the calls table, utilization bars, page headers.

import { h } from "./dom.js";
import { dateTime, duration, hour, iso, tagsText, usd } from "./format.js";
import { requested, utilization } from "./queries.js";

const KINDS = {
  active: ["In flight", "neutral"],
  settled: ["Settled", "ok"],
  released: ["Released", "neutral"],
  expired: ["Expired", "warn"],
  refused: ["Blocked", "bad"],
  usage: ["Usage", "ok"],
};

export function kindBadge(kind) {
  const [label, tone] = KINDS[kind] ?? [kind, "neutral"];
  return h("span", { class: ["badge", tone] }, label);
}

export function pageHeader(title, subtitle, ...actions) {
  return h(
    "div",
    { class: "page-header" },
    h("div", null, h("h1", { tabindex: "-1" }, title), subtitle ? h("p", { class: "muted" }, subtitle) : null),
    actions.length ? h("div", { class: "actions" }, actions) : null,
  );
}

export function card(title, ...body) {
  return h("section", { class: "card", "aria-label": title }, h("h2", null, title), body);
}

function tagChips(tags) {
  const entries = Object.entries(tags ?? {});
  if (!entries.length) return h("span", { class: "muted" }, "no tags");
  return h(
    "span",
    { class: "chips", title: tagsText(tags) },
    entries.slice(0, 4).map(([k, v]) => h("span", { class: "chip" }, h("span", { class: "chip-key" }, k), v)),
    entries.length > 4 ? h("span", { class: "chip more" }, `+${entries.length - 4}`) : null,
  );
}

export function eventRow(e, { compact = false } = {}) {
  const amount = requested(e);
  if (compact) {
    const cost = e.actual_nanos ?? amount;
    return h(
      "tr",
      { dataset: { id: e.id, kind: e.kind } },
      h("td", { class: "nowrap" }, h("time", { datetime: e.at ?? iso(e.at_ms), title: dateTime(e.at_ms) }, hour(e.at_ms, true))),
      h("td", null, kindBadge(e.kind)),
      h("td", null, h("span", { class: "model" }, e.model ?? "–"), h("span", { class: "sub" }, e.budget ? `by ${e.budget.name}` : tagsText(e.tags))),
      h("td", { class: "num" }, usd(cost)),
    );
  }
  return h(
    "tr",
    { dataset: { id: e.id, kind: e.kind } },
    h("td", { class: "nowrap" }, h("time", { datetime: e.at ?? iso(e.at_ms) }, dateTime(e.at_ms))),
    h("td", null, kindBadge(e.kind)),
    h("td", null, h("span", { class: "model" }, e.model ?? "–"), h("span", { class: "sub" }, e.provider ?? "")),
    h("td", null, tagChips(e.tags)),
    h("td", { class: "num" }, e.kind === "usage" ? "–" : usd(amount)),
    h("td", { class: "num" }, e.actual_nanos === null || e.actual_nanos === undefined ? "–" : usd(e.actual_nanos)),
    h("td", { class: ["num", e.overrun_nanos > 0 ? "bad-text" : null] }, e.overrun_nanos > 0 ? usd(e.overrun_nanos) : "–"),
    h(
      "td",
      null,
      e.budget ? [h("span", null, e.budget.name), e.budget.key ? h("span", { class: "sub" }, e.budget.key) : null] : "–",
    ),
  );
}

/** The calls table; `rows` may be extended later through the returned `tbody`. */
export function eventsTable(list, caption, { compact = false } = {}) {
  const tbody = h("tbody", null, list.map((e) => eventRow(e, { compact })));
  const columns = compact
    ? ["Time (UTC)", "Status", "Model and tags", "Cost / asked"]
    : ["Time (UTC)", "Status", "Model", "Tags", "Reserved / asked", "Actual", "Overrun", "Budget"];
  const numeric = (i) => (compact ? i === 3 : i >= 4 && i <= 6);
  const table = h(
    "table",
    { class: "data events" },
    h("caption", { class: "sr-only" }, caption),
    h(
      "thead",
      null,
      h(
        "tr",
        null,
        columns.map((c, i) => h("th", { scope: "col", class: numeric(i) ? "num" : null }, c)),
      ),
    ),
    tbody,
  );
  return { table: h("div", { class: "table-wrap" }, table), tbody };
}

/** Spent (solid) and reserved (hatched) of a counter's limit, as an ARIA meter. */
export function utilBar(c) {
  const u = utilization(c);
  const pct = (v) => `${Math.min(100, (v / Math.max(1, c.limit_nanos)) * 100).toFixed(2)}%`;
  const tone = u >= 1 ? "bad" : u >= 0.8 ? "warn" : "ok";
  const text = `${Number.isFinite(u) ? Math.round(u * 100) : 100}% used: ${usd(c.spent_nanos)} spent and ${usd(c.reserved_nanos)} reserved of ${usd(c.limit_nanos)}`;
  return h(
    "div",
    {
      class: ["meter", tone],
      role: "meter",
      "aria-valuemin": 0,
      "aria-valuemax": 100,
      "aria-valuenow": Math.min(100, Math.round((Number.isFinite(u) ? u : 1) * 100)),
      "aria-valuetext": text,
      "aria-label": c.key ? `${c.name} (${c.key})` : c.name,
      title: text,
    },
    h("span", { class: "spent", style: { width: pct(c.spent_nanos) } }),
    h("span", { class: "reserved", style: { width: pct(c.reserved_nanos) } }),
  );
}

/** "resets in 3h 12m" with the exact time in the tooltip; "never resets" for `total`. */
export function resetText(c, now = Date.now()) {
  if (!c.resets_at_ms) return h("span", { class: "muted" }, "never resets");
  return h(
    "time",
    { datetime: c.resets_at ?? iso(c.resets_at_ms), title: `${dateTime(c.resets_at_ms)} UTC` },
    `resets in ${duration(c.resets_at_ms - now)}`,
  );
}

export function missingRoute(what) {
  return h(
    "p",
    { class: "notice" },
    `This server does not offer ${what} yet: upgrade bursora-server to see it here.`,
  );
}
