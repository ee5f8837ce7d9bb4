// API keys of the selected project (admin): list, create (the secret is shown once), revoke.

import { codeBlock, confirmDialog, field, h, replace, toast } from "../dom.js";
import { dateTime } from "../format.js";
import { isMissingRoute } from "../api.js";
import { pageHeader } from "../views.js";

export const title = "API keys";

export async function mount(ctx, root) {
  const { api } = ctx;
  if (!api.isAdmin) {
    replace(
      root,
      h(
        "section",
        { class: "page" },
        pageHeader(title, "Keys let an application reserve and settle in one project."),
        h("div", { class: "empty" }, h("h3", null, "Managing keys needs an admin key"), h("p", null, "You are signed in with a project key, which can use its project but not manage keys. Sign out and sign in with the admin key, or use the CLI:"), codeBlock("bursora-server keys list --project <id>")),
      ),
    );
    return {};
  }
  const project = ctx.projects.find((p) => p.id === api.project);
  const list = h("div", { class: "keys-list" });
  const revealed = h("div", { class: "revealed", "aria-live": "polite" });
  const name = h("input", { type: "text", autocomplete: "off", maxlength: 256, placeholder: "checkout-service" });
  const form = h(
    "form",
    {
      class: "inline-form",
      onsubmit: async (e) => {
        e.preventDefault();
        try {
          const k = await api.request("POST", `/v1/projects/${encodeURIComponent(api.project)}/keys`, { body: { name: name.value.trim() || undefined }, scoped: false });
          name.value = "";
          replace(
            revealed,
            h(
              "div",
              { class: "secret", role: "region", "aria-label": "New key" },
              h("h3", null, `Key ${k.name} created`),
              h("p", null, "Copy it now: it is shown only this once (the server keeps only its hash)."),
              codeBlock(k.key, "Copy key"),
              h("p", { class: "sub" }, "Then, where your app runs:"),
              codeBlock(`BURSORA_ENDPOINT=${location.origin}\nBURSORA_API_KEY=${k.key}`, "Copy environment"),
              h("button", { type: "button", class: "ghost small", onclick: () => replace(revealed) }, "Hide key"),
            ),
          );
          revealed.querySelector("button")?.focus();
          await load();
        } catch (err) {
          toast(err.message, "error");
        }
      },
    },
    field("Key name", name, "What uses it, so you know what breaks when you revoke it."),
    h("button", { type: "submit", class: "primary" }, "Create key"),
  );

  async function load() {
    let keys;
    try {
      const r = await api.request("GET", `/v1/projects/${encodeURIComponent(api.project)}/keys`, { scoped: false });
      keys = Array.isArray(r) ? r : (r.keys ?? []);
    } catch (e) {
      if (!isMissingRoute(e)) throw e;
      replace(list, h("p", { class: "notice" }, "This server cannot list keys yet: upgrade bursora-server. You can still create keys."));
      return;
    }
    if (!ctx.isCurrent()) return;
    if (!keys.length) {
      replace(list, h("div", { class: "empty" }, h("h3", null, "No keys yet"), h("p", null, "Create a key for each application or service that calls LLMs, then give it BURSORA_ENDPOINT and BURSORA_API_KEY.")));
      return;
    }
    replace(
      list,
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "data", id: "keys-table" },
          h("caption", { class: "sr-only" }, `Keys of ${project?.name ?? api.project}`),
          h("thead", null, h("tr", null, ["Name", "Key id", "Created (UTC)", ""].map((c) => h("th", { scope: "col" }, c || h("span", { class: "sr-only" }, "Actions"))))),
          h(
            "tbody",
            null,
            keys.map((k) =>
              h(
                "tr",
                { dataset: { id: k.id } },
                h("td", null, k.name),
                h("td", null, h("code", null, k.id)),
                h("td", null, createdText(k)),
                h(
                  "td",
                  { class: "num" },
                  h(
                    "button",
                    {
                      type: "button",
                      class: "ghost small danger-text",
                      "aria-label": `Revoke key ${k.name} (${k.id})`,
                      onclick: async () => {
                        const ok = await confirmDialog(`Revoke ${k.name}?`, "Anything using this key is refused (401) from now on. This cannot be undone.", "Revoke key");
                        if (!ok) return;
                        try {
                          await api.request("DELETE", `/v1/keys/${encodeURIComponent(k.id)}`, { scoped: false });
                          toast(`Key ${k.name} revoked`, "success");
                        } catch (err) {
                          toast(err.message, "error");
                        }
                        await load();
                        name.focus();
                      },
                    },
                    "Revoke",
                  ),
                ),
              ),
            ),
          ),
        ),
      ),
    );
  }

  await load();
  replace(
    root,
    h(
      "section",
      { class: "page" },
      pageHeader(title, `Keys of project ${project?.name ?? api.project}. A project key reserves, settles and reads its own project only.`),
      h("section", { class: "card", "aria-label": "Create a key" }, h("h2", null, "Create a key"), form, revealed),
      h("section", { class: "card", "aria-label": "Keys" }, h("h2", null, "Keys"), list),
    ),
  );
  return {};
}

function createdText(k) {
  const at = k.created_at_ms ?? (typeof k.created_at === "number" ? k.created_at : Date.parse(k.created_at ?? ""));
  return Number.isFinite(at) ? dateTime(at) : "–";
}
