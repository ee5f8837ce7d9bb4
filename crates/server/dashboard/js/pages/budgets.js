// Budgets: each one's use of its current window (spent and reserved against the limit, when it
// resets), past windows, and create / edit / delete for admin keys.

import { isMissingRoute } from "../api.js";
import { barChart } from "../charts.js";
import { codeBlock, confirmDialog, field, h, modal, replace, toast, announce } from "../dom.js";
import { DAY_MS, count, dateTime, day, duration, parseUsd, share, usd } from "../format.js";
import { budgetsAndCounters, changeWatcher, utilization } from "../queries.js";
import { card, pageHeader, resetText, utilBar } from "../views.js";

export const title = "Budgets";

const WINDOWS = ["minute", "hour", "day", "week", "month", "total"];
const SHOWN_COUNTERS = 5;

/** `tenant_id=*, env=prod` → `{tenant_id: "*", env: "prod"}`; throws a message when malformed. */
export function parseMatch(text) {
  const match = {};
  for (const part of text.split(/[,\n]/).map((p) => p.trim()).filter(Boolean)) {
    const eq = part.indexOf("=");
    if (eq <= 0) throw new Error(`"${part}" is not key=value`);
    const key = part.slice(0, eq).trim();
    const value = part.slice(eq + 1).trim();
    if (!/^[A-Za-z0-9_.:-]{1,64}$/.test(key)) throw new Error(`"${key}" is not a tag key (letters, digits, _ . : -)`);
    if (!value) throw new Error(`"${key}" needs a value, or * for one counter per value`);
    match[key] = value;
  }
  return match;
}

function matchText(match) {
  return Object.entries(match ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join(", ");
}

/** The create/edit form in a modal; resolves with the saved budget or undefined. */
function budgetForm(api, existing, names) {
  return modal(existing ? `Edit budget ${existing.name}` : "New budget", (close) => {
    const name = h("input", { type: "text", required: true, maxlength: 256, autocomplete: "off", value: existing?.name ?? "", disabled: Boolean(existing) });
    const limit = h("input", { type: "text", inputmode: "decimal", required: true, autocomplete: "off", value: existing ? String(existing.limit_usd) : "" });
    const windowSelect = h("select", null, WINDOWS.map((w) => h("option", { value: w, selected: w === (existing?.window ?? "day") }, w === "total" ? "total (never resets)" : `${w} (UTC)`)));
    const mode = h(
      "select",
      null,
      h("option", { value: "block", selected: (existing?.mode ?? "block") === "block" }, "Block: refuse calls that do not fit"),
      h("option", { value: "notify", selected: existing?.mode === "notify" }, "Notify: count, never block"),
    );
    const match = h("input", { type: "text", autocomplete: "off", value: matchText(existing?.match), placeholder: "tenant_id=*, env=prod" });
    const error = h("p", { class: "form-error", role: "alert" });
    const save = h("button", { type: "submit", class: "primary" }, existing ? "Save changes" : "Create budget");
    return h(
      "form",
      {
        class: "budget-form",
        onsubmit: async (e) => {
          e.preventDefault();
          error.textContent = "";
          const limitNanos = parseUsd(limit.value);
          if (limitNanos === null) {
            error.textContent = "The limit is an amount in USD, like 50 or 12.50.";
            limit.focus();
            return;
          }
          let selector;
          try {
            selector = parseMatch(match.value);
          } catch (err) {
            error.textContent = `Match: ${err.message}.`;
            match.focus();
            return;
          }
          const body = { match: selector, limit_nanos: limitNanos, window: windowSelect.value, mode: mode.value };
          save.disabled = true;
          try {
            if (existing) {
              close(await api.put(`/v1/budgets/${encodeURIComponent(existing.id)}`, body));
            } else {
              const n = name.value.trim();
              if (names.includes(n)) throw new Error(`A budget named ${n} exists already: edit it instead.`);
              close(await api.post("/v1/budgets", { name: n, ...body }));
            }
          } catch (err) {
            error.textContent = err.message;
            save.disabled = false;
          }
        },
      },
      field("Name", name, existing ? "A budget's name cannot change: SDK declarations find it by name." : "How people and the SDK will refer to it, e.g. org-daily or per-tenant."),
      h("div", { class: "inline-fields" }, field("Limit (USD)", limit), field("Window", windowSelect)),
      field("When a call does not fit", mode),
      field("Match", match, "Tags a call must carry to count, as key=value pairs separated by commas; a value of * keeps one counter per distinct value (tenant_id=*). Empty: every call of the project. provider and model work as tags."),
      error,
      h("div", { class: "actions" }, h("button", { type: "button", class: "ghost", onclick: () => close(undefined) }, "Cancel"), save),
    );
  });
}

async function showHistory(api, b) {
  const now = Date.now();
  const spans = { minute: DAY_MS / 24, hour: 2 * DAY_MS, day: 30 * DAY_MS, week: 26 * 7 * DAY_MS, month: 365 * DAY_MS, total: 365 * DAY_MS };
  let content;
  try {
    const r = await api.get(`/v1/budgets/${encodeURIComponent(b.id)}/windows`, { from: now - spans[b.window], to: now, limit: 10000 });
    const rows = r.windows ?? r.counters ?? [];
    const byStart = new Map();
    for (const w of rows) {
      const start = w.window_start_ms ?? w.start_ms;
      const p = byStart.get(start) ?? { start_ms: start, total_nanos: 0, max_nanos: 0, keys: 0 };
      p.total_nanos += w.spent_nanos ?? 0;
      // Each template counter has the whole limit: the fullest one is what neared it.
      p.max_nanos = Math.max(p.max_nanos, w.spent_nanos ?? 0);
      p.keys += 1;
      byStart.set(start, p);
    }
    const points = [...byStart.values()].sort((a, b2) => a.start_ms - b2.start_ms);
    content = points.length
      ? [
          barChart({ points, formatX: b.window === "minute" || b.window === "hour" ? dateTime : day, title: `Spend per ${b.window} window of ${b.name}`, height: 200 }),
          h(
            "div",
            { class: "table-wrap short" },
            h(
              "table",
              { class: "data" },
              h("caption", { class: "sr-only" }, `Windows of ${b.name}`),
              h("thead", null, h("tr", null, h("th", { scope: "col" }, "Window start (UTC)"), h("th", { scope: "col", class: "num" }, "Spent"), h("th", { scope: "col", class: "num" }, "Fullest counter, of the limit"), h("th", { scope: "col", class: "num" }, "Counters"))),
              h(
                "tbody",
                null,
                points
                  .slice()
                  .reverse()
                  .map((p) => h("tr", null, h("td", null, dateTime(p.start_ms)), h("td", { class: "num" }, usd(p.total_nanos)), h("td", { class: "num" }, share(p.max_nanos, b.limit_nanos)), h("td", { class: "num" }, count(p.keys)))),
              ),
            ),
          ),
        ]
      : h("p", { class: "muted" }, "No spend in past windows yet.");
  } catch (e) {
    content = h("p", { class: "notice" }, isMissingRoute(e) ? "This server does not keep past windows yet: upgrade bursora-server to see them." : e.message);
  }
  await modal(`${b.name}: past windows`, (close) => h("div", { class: "history" }, content, h("div", { class: "actions" }, h("button", { type: "button", class: "primary", onclick: () => close() }, "Close"))));
}

function counterRow(c, now) {
  return h(
    "li",
    { class: "counter" },
    h(
      "div",
      { class: "counter-head" },
      h("span", { class: "name" }, c.key ?? "all matching calls"),
      h("span", { class: "num" }, share(c.spent_nanos + c.reserved_nanos, c.limit_nanos)),
    ),
    utilBar(c),
    h(
      "div",
      { class: "figures" },
      h("span", null, h("span", { class: "dot spent" }), `${usd(c.spent_nanos)} spent`),
      h("span", null, h("span", { class: "dot reserved" }), `${usd(c.reserved_nanos)} reserved`),
      h("span", null, `${usd(Math.max(0, c.limit_nanos - c.spent_nanos - c.reserved_nanos))} left`),
      c.overrun_nanos > 0 ? h("span", { class: "bad-text" }, `${usd(c.overrun_nanos)} overrun`) : null,
      resetText(c, now),
    ),
  );
}

function budgetCard(api, b, counters, expanded, actions) {
  const now = Date.now();
  const template = Object.values(b.match ?? {}).includes("*");
  const sorted = [...counters].sort((x, y) => utilization(y) - utilization(x));
  const shown = expanded.has(b.id) ? sorted : sorted.slice(0, SHOWN_COUNTERS);
  const titleId = `budget-${b.id}`;
  return h(
    "article",
    { class: "budget", "aria-labelledby": titleId, dataset: { id: b.id } },
    h(
      "header",
      { class: "budget-head" },
      h(
        "div",
        null,
        h("h2", { id: titleId }, b.name),
        h(
          "div",
          { class: "meta" },
          h("span", { class: ["badge", b.mode === "block" ? "bad" : "neutral"] }, b.mode === "block" ? "Blocks" : "Notifies"),
          h("span", null, `${usd(b.limit_nanos)} per ${b.window === "total" ? "all time" : b.window}`),
          Object.keys(b.match ?? {}).length
            ? h("span", { class: "chips" }, Object.entries(b.match).map(([k, v]) => h("span", { class: "chip" }, h("span", { class: "chip-key" }, k), v)))
            : h("span", { class: "muted" }, "every call"),
        ),
      ),
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", class: "ghost small", id: `history-${b.id}`, "aria-label": `Past windows of ${b.name}`, onclick: () => showHistory(api, b) }, "History"),
        api.isAdmin ? h("button", { type: "button", class: "ghost small", id: `edit-${b.id}`, "aria-label": `Edit ${b.name}`, onclick: () => actions.edit(b) }, "Edit") : null,
        api.isAdmin ? h("button", { type: "button", class: "ghost small danger-text", id: `delete-${b.id}`, "aria-label": `Delete ${b.name}`, onclick: () => actions.remove(b) }, "Delete") : null,
      ),
    ),
    counters.length
      ? [
          template ? h("p", { class: "sub" }, `${count(counters.length)} counters this window, one per ${Object.keys(b.match).filter((k) => b.match[k] === "*").join(" and ")}; fullest first.`) : null,
          h("ul", { class: "counters" }, shown.map((c) => counterRow(c, now))),
          sorted.length > SHOWN_COUNTERS
            ? h(
                "button",
                { type: "button", class: "ghost small", id: `more-${b.id}`, "aria-expanded": String(expanded.has(b.id)), onclick: () => actions.toggle(b) },
                expanded.has(b.id) ? "Show fewer" : `Show all ${count(sorted.length)}`,
              )
            : null,
        ]
      : h("p", { class: "muted" }, template ? "No matching calls in this window yet: a counter appears for each new value." : "Nothing spent or reserved in this window yet."),
  );
}

export async function mount(ctx, root) {
  const { api } = ctx;
  let data = await budgetsAndCounters(api);
  const expanded = new Set();
  const list = h("div", { class: "budget-list" });

  const reload = async () => {
    const next = await budgetsAndCounters(api);
    if (!ctx.isCurrent() || JSON.stringify(next) === JSON.stringify(data)) return;
    data = next;
    draw();
  };
  const actions = {
    async edit(b) {
      const saved = await budgetForm(api, b, []);
      if (saved) {
        toast(`Budget ${saved.name} saved`, "success");
        await reload();
      }
      document.getElementById(`edit-${b.id}`)?.focus();
    },
    async remove(b) {
      const ok = await confirmDialog(`Delete ${b.name}?`, `Its counters go with it, and calls it would have blocked go through. An SDK that declares "${b.name}" creates it again.`, "Delete budget");
      if (!ok) return;
      try {
        await api.delete(`/v1/budgets/${encodeURIComponent(b.id)}`);
        toast(`Budget ${b.name} deleted`, "success");
      } catch (e) {
        toast(e.message, "error");
      }
      await reload();
      root.querySelector("h1")?.focus();
    },
    toggle(b) {
      if (expanded.has(b.id)) expanded.delete(b.id);
      else expanded.add(b.id);
      draw();
      document.getElementById(`more-${b.id}`)?.focus();
    },
  };
  const create = async () => {
    const saved = await budgetForm(api, null, data.budgets.map((b) => b.name));
    if (saved) {
      toast(`Budget ${saved.name} created`, "success");
      announce(`Budget ${saved.name} created`);
      await reload();
    }
  };

  function draw() {
    const focusedId = list.contains(document.activeElement) ? document.activeElement.id : null;
    if (!data.budgets.length) {
      replace(
        list,
        h(
          "div",
          { class: "empty" },
          h("h3", null, "No budgets yet"),
          h("p", null, "A budget caps spend per window: $50 a day for the whole project, or $5 a day per tenant_id. Calls that do not fit a block budget are refused before the provider sees them."),
          api.isAdmin
            ? h("button", { type: "button", class: "primary", onclick: create }, "Create your first budget")
            : [h("p", null, "Creating budgets needs an admin key. With the CLI:"), codeBlock("bursora-server budgets create --project <id> --name org-daily --limit-usd 50 --window day")],
        ),
      );
      return;
    }
    const byBudget = new Map(data.budgets.map((b) => [b.id, []]));
    for (const c of data.counters) byBudget.get(c.id)?.push(c);
    replace(list, data.budgets.map((b) => budgetCard(api, b, byBudget.get(b.id), expanded, actions)));
    if (focusedId) document.getElementById(focusedId)?.focus();
  }

  draw();
  replace(
    root,
    h(
      "section",
      { class: "page" },
      pageHeader(
        "Budgets",
        "Spent and reserved against each limit in the current window. Reserved is held by calls in flight.",
        api.isAdmin ? h("button", { type: "button", class: "primary", id: "new-budget", onclick: create }, "New budget") : null,
      ),
      api.isAdmin ? null : h("p", { class: "notice" }, "Read-only: sign in with an admin key to create, edit or delete budgets."),
      list,
    ),
  );
  const changed = changeWatcher(api, 5);
  await changed();
  return {
    async tick() {
      if (await changed()) await reload();
      else {
        // Reset times count down even when nothing happens.
        for (const t of root.querySelectorAll("time[datetime]")) {
          const at = Date.parse(t.getAttribute("datetime"));
          if (Number.isFinite(at) && t.textContent.startsWith("resets in")) t.textContent = `resets in ${duration(at - Date.now())}`;
        }
      }
    },
  };
}
