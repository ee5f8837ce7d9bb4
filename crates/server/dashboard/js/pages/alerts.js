// Budget alerts of the selected project: what was sent (thresholds reached, once per window),
// to which webhooks, with delivery status; admins add and remove webhooks and set thresholds.

import { codeBlock, confirmDialog, field, h, replace, toast } from "../dom.js";
import { dateTime, usd } from "../format.js";
import { isMissingRoute } from "../api.js";
import { pageHeader } from "../views.js";

export const title = "Alerts";

const STATUS = {
  delivered: ["Delivered", "ok"],
  pending: ["Retrying", "warn"],
  failed: ["Failed", "bad"],
  no_webhooks: ["No webhook", "neutral"],
};

function statusBadge(status) {
  const [label, tone] = STATUS[status] ?? [status, "neutral"];
  return h("span", { class: ["badge", tone] }, label);
}

function alertRow(a) {
  const b = a.budget ?? {};
  return h(
    "tr",
    { dataset: { id: a.id, status: a.status } },
    h("td", null, dateTime(a.created_at_ms)),
    h("td", null, b.name ?? "", b.key ? h("span", { class: "muted" }, ` ${b.key}`) : null),
    h("td", { class: "num" }, `${a.threshold_pct}%`),
    h("td", { class: "num" }, `${usd(b.spent_nanos)} of ${usd(b.limit_nanos)}`),
    h("td", null, b.window ?? ""),
    h("td", null, statusBadge(a.status)),
    h("td", { class: "num" }, String(a.attempts ?? 0)),
    h("td", { class: "muted" }, a.last_error ?? ""),
  );
}

export async function mount(ctx, root) {
  const { api } = ctx;
  const sent = h("div", { class: "alerts-list" });
  const hooks = h("div", { class: "webhooks-list" });
  const thresholds = h("div", { class: "thresholds" });

  async function loadAlerts() {
    let r;
    try {
      r = await api.get("/v1/alerts", { limit: 100 });
    } catch (e) {
      if (!isMissingRoute(e)) throw e;
      replace(sent, h("p", { class: "notice" }, "This server has no alerts yet: upgrade bursora-server."));
      return "missing";
    }
    if (!ctx.isCurrent()) return "";
    const alerts = r.alerts ?? [];
    const key = alerts.map((a) => `${a.id}:${a.status}:${a.attempts}`).join(",");
    if (sent.dataset.key === key) return key;
    sent.dataset.key = key;
    if (!alerts.length) {
      replace(
        sent,
        h(
          "div",
          { class: "empty" },
          h("h3", null, "No alerts sent yet"),
          h("p", null, "A budget alerts once per window when its settled spend reaches one of its thresholds. Add a webhook below, then give a budget thresholds (below, or with the API):"),
          codeBlock(`curl -X PUT -H "Authorization: Bearer $BURSORA_ADMIN_KEY" -H "Content-Type: application/json" \\\n  -d '{"thresholds": [50, 80, 100]}' ${location.origin}/v1/budgets/<budget id>/alerts?project=${api.project ?? "<project>"}`),
        ),
      );
      return key;
    }
    replace(
      sent,
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "data", id: "alerts-table" },
          h("caption", { class: "sr-only" }, "Alerts sent, newest first"),
          h("thead", null, h("tr", null, ["Sent (UTC)", "Budget", "Threshold", "Spent", "Window", "Delivery", "Attempts", "Last error"].map((c) => h("th", { scope: "col" }, c)))),
          h("tbody", null, alerts.map(alertRow)),
        ),
      ),
    );
    return key;
  }

  async function loadWebhooks() {
    let list = [];
    try {
      list = (await api.get("/v1/webhooks")).webhooks ?? [];
    } catch (e) {
      if (!isMissingRoute(e)) throw e;
      return;
    }
    if (!ctx.isCurrent()) return;
    const rows = list.map((w) =>
      h(
        "tr",
        { dataset: { id: w.id } },
        h("td", null, w.name),
        h("td", null, h("code", null, w.url)),
        h("td", null, w.format),
        h(
          "td",
          { class: "num" },
          api.isAdmin
            ? h(
                "button",
                {
                  type: "button",
                  class: "ghost small danger-text",
                  "aria-label": `Remove webhook ${w.name}`,
                  onclick: async () => {
                    if (!(await confirmDialog(`Remove ${w.name}?`, "Alerts stop going to this webhook.", "Remove webhook"))) return;
                    try {
                      await api.delete(`/v1/webhooks/${encodeURIComponent(w.id)}`);
                    } catch (err) {
                      toast(err.message, "error");
                    }
                    await loadWebhooks();
                  },
                },
                "Remove",
              )
            : null,
        ),
      ),
    );
    replace(
      hooks,
      list.length
        ? h(
            "div",
            { class: "table-wrap" },
            h(
              "table",
              { class: "data", id: "webhooks-table" },
              h("caption", { class: "sr-only" }, "Webhooks"),
              h("thead", null, h("tr", null, ["Name", "URL", "Format", ""].map((c) => h("th", { scope: "col" }, c || h("span", { class: "sr-only" }, "Actions"))))),
              h("tbody", null, rows),
            ),
          )
        : h("p", { class: "muted" }, "No webhook yet: alerts are recorded here but sent nowhere."),
    );
  }

  async function loadThresholds() {
    const budgets = (await api.get("/v1/budgets")).budgets ?? [];
    if (!ctx.isCurrent()) return;
    const rows = [];
    for (const b of budgets) {
      let current = [];
      try {
        current = (await api.get(`/v1/budgets/${encodeURIComponent(b.id)}/alerts`)).thresholds ?? [];
      } catch (e) {
        if (!isMissingRoute(e)) throw e;
      }
      const input = h("input", { type: "text", value: current.join(", "), placeholder: "50, 80, 100", inputmode: "numeric", disabled: !api.isAdmin });
      const save = h(
        "button",
        {
          type: "button",
          class: "secondary small",
          "aria-label": `Save thresholds of ${b.name}`,
          disabled: !api.isAdmin,
          onclick: async () => {
            const values = input.value.split(/[\s,]+/).filter(Boolean).map(Number);
            try {
              const r = await api.put(`/v1/budgets/${encodeURIComponent(b.id)}/alerts`, { thresholds: values });
              input.value = (r.thresholds ?? []).join(", ");
              toast(`Thresholds of ${b.name} saved`, "success");
            } catch (err) {
              toast(err.message, "error");
            }
          },
        },
        "Save",
      );
      rows.push(h("div", { class: "inline-form" }, field(`${b.name} (${b.window}): thresholds in %`, input), save));
    }
    replace(thresholds, rows.length ? rows : h("p", { class: "muted" }, "No budgets yet: create one on the Budgets page."));
  }

  const url = h("input", { type: "url", autocomplete: "off", placeholder: "https://hooks.slack.com/services/…", required: true });
  const format = h("select", null, h("option", { value: "slack" }, "Slack"), h("option", { value: "json" }, "JSON"));
  const addForm = h(
    "form",
    {
      class: "inline-form",
      onsubmit: async (e) => {
        e.preventDefault();
        try {
          await api.post("/v1/webhooks", { url: url.value.trim(), format: format.value });
          url.value = "";
          toast("Webhook added", "success");
          await loadWebhooks();
        } catch (err) {
          toast(err.message, "error");
        }
      },
    },
    field("Webhook URL", url, "Slack incoming webhooks, or any endpoint that takes JSON."),
    field("Format", format),
    h("button", { type: "submit", class: "primary" }, "Add webhook"),
  );

  const state = await loadAlerts();
  if (state !== "missing") {
    await loadWebhooks();
    await loadThresholds();
  }
  replace(
    root,
    h(
      "section",
      { class: "page" },
      pageHeader(title, "Each budget threshold alerts once per window, to every webhook of the project."),
      h("section", { class: "card", "aria-label": "Alerts sent" }, h("h2", null, "Alerts sent"), sent),
      h("section", { class: "card", "aria-label": "Webhooks" }, h("h2", null, "Webhooks"), hooks, api.isAdmin ? addForm : null),
      h("section", { class: "card", "aria-label": "Thresholds" }, h("h2", null, "Thresholds"), thresholds),
    ),
  );
  return {
    async tick() {
      await loadAlerts();
    },
  };
}
