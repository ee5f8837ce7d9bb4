// Spend explorer: spend grouped by model, provider or any tag over a time range, per bucket,
// with CSV export of exactly what the table shows.

import { PALETTE, barChart } from "../charts.js";
import { download, toCsv } from "../csv.js";
import { field, h, replace } from "../dom.js";
import { DAY_MS, HOUR_MS, count, day, hour, isoDate, share, startOfUtcDay, startOfUtcMonth, usd, usdExact } from "../format.js";
import { breakdown, budgetsAndCounters, changeWatcher, events, series, tagKeys } from "../queries.js";
import { card, missingRoute, pageHeader } from "../views.js";

export const title = "Spend explorer";

const RANGES = [
  ["24h", "Last 24 hours"],
  ["7d", "Last 7 days"],
  ["30d", "Last 30 days"],
  ["month", "This month"],
  ["last-month", "Last month"],
  ["custom", "Custom dates"],
];
const STACKED = 5;

/** [from, to) in Unix ms for a range name (custom: the date inputs, whole UTC days). */
export function rangeBounds(range, fromDate, toDate, now = Date.now()) {
  switch (range) {
    case "24h":
      return [now - DAY_MS, now];
    case "7d":
      return [now - 7 * DAY_MS, now];
    case "month":
      return [startOfUtcMonth(now), now];
    case "last-month": {
      const end = startOfUtcMonth(now);
      return [startOfUtcMonth(end - 1), end];
    }
    case "custom": {
      const from = Date.parse(`${fromDate}T00:00:00Z`);
      const to = Date.parse(`${toDate}T00:00:00Z`) + DAY_MS;
      if (Number.isFinite(from) && Number.isFinite(to) && to > from) return [from, Math.min(to, now)];
      return [now - 30 * DAY_MS, now];
    }
    default:
      return [now - 30 * DAY_MS, now];
  }
}

function bucketFor(from, to) {
  return to - from <= 2 * DAY_MS ? "hour" : "day";
}

export async function mount(ctx, root) {
  const { api } = ctx;
  const [{ budgets }, recent] = await Promise.all([budgetsAndCounters(api), events(api, { limit: 200 })]);
  const keys = tagKeys(budgets, recent.events);
  const now = Date.now();
  const state = {
    groupBy: ctx.params.get("group_by") || "model",
    range: ctx.params.get("range") || "30d",
    from: ctx.params.get("from") || isoDate(now - 29 * DAY_MS),
    to: ctx.params.get("to") || isoDate(now),
  };

  // Controls: built once; the results below them are redrawn.
  const groupSelect = h("select", { id: "spend-group" });
  const known = ["model", "provider", ...keys.map((k) => `tag:${k}`)];
  if (!known.includes(state.groupBy) && state.groupBy.startsWith("tag:")) known.push(state.groupBy);
  for (const g of known) {
    groupSelect.append(h("option", { value: g, selected: g === state.groupBy }, g.startsWith("tag:") ? `Tag: ${g.slice(4)}` : g === "model" ? "Model" : "Provider"));
  }
  groupSelect.append(h("option", { value: "__other" }, "Another tag…"));
  const otherKey = h("input", { type: "text", id: "spend-tag-key", placeholder: "tenant_id", autocomplete: "off", pattern: "[A-Za-z0-9_.:\\-]{1,64}" });
  const otherField = field("Tag key", otherKey, "Any tag your calls carry.");
  otherField.hidden = true;
  const rangeSelect = h("select", { id: "spend-range" }, RANGES.map(([v, label]) => h("option", { value: v, selected: v === state.range }, label)));
  const fromInput = h("input", { type: "date", id: "spend-from", value: state.from, max: isoDate(now) });
  const toInput = h("input", { type: "date", id: "spend-to", value: state.to, max: isoDate(now) });
  const customFields = h("div", { class: "inline-fields" }, field("From", fromInput), field("To", toInput));
  customFields.hidden = state.range !== "custom";
  const exportButton = h("button", { type: "button", class: "secondary", disabled: true }, "Export CSV");
  const results = h("div", { class: "results", "aria-live": "polite", "aria-busy": "true" });

  let data = null;

  async function refresh({ quiet = false } = {}) {
    const [from, to] = rangeBounds(state.range, state.from, state.to);
    const bucket = bucketFor(from, to);
    results.setAttribute("aria-busy", "true");
    const [groups, points] = await Promise.all([
      breakdown(api, { groupBy: state.groupBy, from, to, limit: 100 }),
      series(api, { bucket, from, to, groupBy: state.groupBy }),
    ]);
    if (!ctx.isCurrent()) return;
    const next = { from, to, bucket, groups, points, groupBy: state.groupBy };
    // A live refresh that changes nothing leaves the page (and the focus in it) alone.
    const same = quiet && data && JSON.stringify({ ...next, from: 0, to: 0 }) === JSON.stringify({ ...data, from: 0, to: 0 });
    data = next;
    if (!same) draw();
    results.setAttribute("aria-busy", "false");
  }

  function draw() {
    const { groups, points, from, to, bucket } = data;
    exportButton.disabled = Boolean(groups.missing) || !(groups.groups ?? []).length;
    if (groups.missing) {
      replace(results, missingRoute("spend breakdowns (GET /v1/spend/breakdown)"));
      return;
    }
    const list = groups.groups ?? [];
    const total = list.reduce((a, g) => a + g.spent_nanos, 0);
    const calls = list.reduce((a, g) => a + g.calls, 0);
    const label = (v) => v ?? `(no ${state.groupBy.replace(/^tag:/, "")})`;
    const top = list.slice(0, STACKED).map((g) => label(g.value));
    const colors = Object.fromEntries(top.map((name, i) => [name, PALETTE[i]]));
    colors.other = PALETTE[6];

    let chart = h("p", { class: "muted" }, "No spend over time on this server.");
    if (!points.missing) {
      const byStart = new Map();
      for (const p of points.points ?? []) {
        const b = byStart.get(p.start_ms) ?? { start_ms: p.start_ms, total_nanos: 0, calls: 0, seg: new Map() };
        const name = top.includes(label(p.value)) ? label(p.value) : "other";
        b.total_nanos += p.spent_nanos;
        b.calls += p.calls ?? 0;
        b.seg.set(name, (b.seg.get(name) ?? 0) + p.spent_nanos);
        byStart.set(p.start_ms, b);
      }
      // Every bucket of the range, empty ones too, so gaps read as gaps.
      const step = bucket === "hour" ? HOUR_MS : DAY_MS;
      const first = bucket === "hour" ? Math.floor(from / HOUR_MS) * HOUR_MS : startOfUtcDay(from);
      const bars = [];
      for (let t = first; t < to; t += step) {
        const b = byStart.get(t) ?? { start_ms: t, total_nanos: 0, calls: 0, seg: new Map() };
        bars.push({ ...b, segments: [...top, "other"].map((name) => ({ name, nanos: b.seg.get(name) ?? 0 })) });
      }
      chart = h(
        "div",
        null,
        barChart({ points: bars, formatX: bucket === "hour" ? hour : day, title: `Spend per ${bucket} by ${state.groupBy}`, colors }),
        h(
          "ul",
          { class: "legend", "aria-label": "Legend" },
          [...top, list.length > STACKED ? "other" : null].filter(Boolean).map((name) => h("li", null, h("span", { class: "swatch", style: { background: colors[name] } }), name)),
        ),
      );
    }

    replace(
      results,
      h(
        "div",
        { class: "kpis compact" },
        h("div", { class: "kpi" }, h("div", { class: "kpi-label" }, "Spend in range"), h("div", { class: "kpi-value" }, usd(total))),
        h("div", { class: "kpi" }, h("div", { class: "kpi-label" }, "Calls"), h("div", { class: "kpi-value" }, count(calls))),
        h("div", { class: "kpi" }, h("div", { class: "kpi-label" }, "Average per call"), h("div", { class: "kpi-value" }, usd(calls ? Math.round(total / calls) : 0))),
        h("div", { class: "kpi" }, h("div", { class: "kpi-label" }, "Groups"), h("div", { class: "kpi-value" }, count(list.length))),
      ),
      card(`Spend per ${bucket}`, chart),
      card(
        `By ${state.groupBy.startsWith("tag:") ? `tag ${state.groupBy.slice(4)}` : state.groupBy}`,
        list.length
          ? h(
              "div",
              { class: "table-wrap" },
              h(
                "table",
                { class: "data", id: "spend-table" },
                h("caption", { class: "sr-only" }, `Spend by ${state.groupBy}, ${isoDate(from)} to ${isoDate(to)}`),
                h("thead", null, h("tr", null, ["Value", "Spend", "Share", "Calls", "Average per call"].map((c, i) => h("th", { scope: "col", class: i ? "num" : null }, c)))),
                h(
                  "tbody",
                  null,
                  list.map((g) =>
                    h(
                      "tr",
                      null,
                      h("td", null, g.value ?? h("em", { class: "muted" }, label(null))),
                      h("td", { class: "num" }, usd(g.spent_nanos)),
                      h("td", { class: "num" }, share(g.spent_nanos, total)),
                      h("td", { class: "num" }, count(g.calls)),
                      h("td", { class: "num" }, usd(g.calls ? Math.round(g.spent_nanos / g.calls) : 0)),
                    ),
                  ),
                ),
              ),
            )
          : h(
              "div",
              { class: "empty" },
              h("h3", null, "No spend in this range"),
              h("p", null, "Pick a longer range, or group by another tag. Calls show up here once they are settled or reported."),
            ),
      ),
    );
  }

  const onChange = async () => {
    if (groupSelect.value === "__other") {
      otherField.hidden = false;
      otherKey.focus();
      return;
    }
    state.groupBy = groupSelect.value;
    state.range = rangeSelect.value;
    customFields.hidden = state.range !== "custom";
    state.from = fromInput.value;
    state.to = toInput.value;
    ctx.setParams({ group_by: state.groupBy, range: state.range, ...(state.range === "custom" ? { from: state.from, to: state.to } : {}) });
    await refresh();
  };
  groupSelect.addEventListener("change", onChange);
  rangeSelect.addEventListener("change", onChange);
  fromInput.addEventListener("change", onChange);
  toInput.addEventListener("change", onChange);
  otherKey.addEventListener("change", async () => {
    const key = otherKey.value.trim();
    if (!/^[A-Za-z0-9_.:-]{1,64}$/.test(key)) return;
    const value = `tag:${key}`;
    if (![...groupSelect.options].some((o) => o.value === value)) {
      groupSelect.insertBefore(h("option", { value }, `Tag: ${key}`), groupSelect.lastElementChild);
    }
    groupSelect.value = value;
    otherField.hidden = true;
    await onChange();
  });
  exportButton.addEventListener("click", () => {
    if (!data || data.groups.missing) return;
    const list = data.groups.groups ?? [];
    const total = list.reduce((a, g) => a + g.spent_nanos, 0);
    const csv = toCsv(
      ["group_by", "value", "spent_usd", "spent_nanos", "calls", "share", "from", "to"],
      list.map((g) => [
        data.groupBy,
        g.value ?? "",
        usdExact(g.spent_nanos),
        g.spent_nanos,
        g.calls,
        total ? (g.spent_nanos / total).toFixed(6) : "0",
        new Date(data.from).toISOString(),
        new Date(data.to).toISOString(),
      ]),
    );
    const name = `bursora-spend-${data.groupBy.replace(/[^A-Za-z0-9_.-]/g, "-")}-${isoDate(data.from)}-to-${isoDate(data.to)}.csv`;
    download(name, csv);
  });

  replace(
    root,
    h(
      "section",
      { class: "page" },
      pageHeader("Spend explorer", "Where the money goes: by model, provider or any tag, over any range.", exportButton),
      h(
        "form",
        { class: "filters", "aria-label": "Filters", onsubmit: (e) => e.preventDefault() },
        field("Group by", groupSelect),
        otherField,
        field("Time range", rangeSelect),
        customFields,
      ),
      results,
    ),
  );
  await refresh();
  const changed = changeWatcher(api);
  await changed();
  return {
    async tick() {
      if (await changed()) await refresh({ quiet: true });
    },
  };
}
