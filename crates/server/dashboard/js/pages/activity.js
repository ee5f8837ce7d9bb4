// Blocked calls, overruns, expired reservations and every call: newest first, paged, live.

import { announce, h, replace } from "../dom.js";
import { events } from "../queries.js";
import { eventRow, eventsTable, missingRoute, pageHeader } from "../views.js";

export const title = "Blocked & overruns";

const VIEWS = {
  blocked: {
    label: "Blocked calls",
    query: { kind: "refused" },
    noun: ["blocked call", "blocked calls"],
    empty: "No blocked calls. When a block budget refuses a call, it shows up here within two seconds, with the budget that refused it. A refused call never reached the provider.",
  },
  overruns: {
    label: "Overruns",
    query: { overrun: true },
    noun: ["overrun", "overruns"],
    empty: "No overruns. An overrun is a call that cost more than was reserved for it (a provider ignored its output limit); the excess still counts against budgets.",
  },
  expired: {
    label: "Expired reservations",
    query: { kind: "expired" },
    noun: ["expired reservation", "expired reservations"],
    empty: "No expired reservations. A reservation that is never settled (a crashed process, a lost connection) expires after its TTL and counts at its full amount.",
  },
  all: {
    label: "All calls",
    query: {},
    noun: ["call", "calls"],
    empty: "No calls yet. Wrap your client with the SDK and every call appears here as it happens.",
  },
};

const PAGE = 50;

export async function mount(ctx, root) {
  const { api } = ctx;
  const view = VIEWS[ctx.params.get("view")] ? ctx.params.get("view") : "blocked";
  const spec = VIEWS[view];
  const first = await events(api, { ...spec.query, limit: PAGE });
  if (!ctx.isCurrent()) return {};

  const switcher = h(
    "div",
    { class: "segmented", role: "group", "aria-label": "Which calls" },
    Object.entries(VIEWS).map(([name, v]) =>
      h("a", { href: `#/activity?view=${name}`, class: name === view ? "active" : null, "aria-current": name === view ? "true" : null }, v.label),
    ),
  );
  const body = h("div", { class: "activity" });
  replace(root, h("section", { class: "page" }, pageHeader(title, "Calls your budgets refused, cost more than reserved, or were never settled."), switcher, body));

  if (first.missing) {
    replace(body, missingRoute("call history (GET /v1/events)"));
    return {};
  }

  let cursor = first.next_cursor;
  const ids = new Set(first.events.map((e) => e.id));
  const { table, tbody } = eventsTable(first.events, spec.label);
  const more = h("button", { type: "button", class: "secondary", id: "load-more" }, "Load older");
  more.hidden = !cursor;
  more.addEventListener("click", async () => {
    more.disabled = true;
    const page = await events(api, { ...spec.query, limit: PAGE, cursor });
    for (const e of page.events) {
      if (ids.has(e.id)) continue;
      ids.add(e.id);
      tbody.append(eventRow(e));
    }
    cursor = page.next_cursor;
    more.hidden = !cursor;
    more.disabled = false;
  });
  const empty = h("div", { class: "empty" }, h("h3", null, `No ${spec.noun[1]}`), h("p", null, spec.empty));
  const draw = () => {
    if (tbody.children.length) replace(body, table, more);
    else replace(body, empty);
  };
  draw();

  return {
    async tick() {
      const page = await events(api, { ...spec.query, limit: PAGE });
      if (page.missing || !ctx.isCurrent()) return;
      const fresh = [];
      for (const e of page.events) {
        const row = tbody.querySelector(`tr[data-id="${CSS.escape(e.id)}"]`);
        if (row) {
          // A call in flight that ended since: show its new state in place.
          if (row.dataset.kind !== e.kind) {
            const next = eventRow(e);
            row.replaceWith(next);
          }
        } else if (!ids.has(e.id)) {
          fresh.push(e);
        }
      }
      if (!fresh.length) return;
      for (const e of fresh) ids.add(e.id);
      const rows = fresh.map((e) => {
        const r = eventRow(e);
        r.classList.add("new");
        return r;
      });
      tbody.prepend(...rows);
      draw();
      announce(`${fresh.length} new ${fresh.length === 1 ? spec.noun[0] : spec.noun[1]}`);
    },
  };
}
