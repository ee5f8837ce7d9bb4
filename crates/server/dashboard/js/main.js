// The dashboard's shell: sign-in, the project picker, navigation and the hash router.
// Each page module exports `title` and `mount(ctx, root)`, which renders into `root` and may
// return `{ tick }`: the function the live poller calls every ~2 s while the page is open.

import { Api, ApiError, session } from "./api.js";
import { announce, field, h, modal, replace, toast } from "./dom.js";
import { Live } from "./live.js";
import * as activity from "./pages/activity.js";
import * as alerts from "./pages/alerts.js";
import * as budgets from "./pages/budgets.js";
import * as keys from "./pages/keys.js";
import * as overview from "./pages/overview.js";
import * as signin from "./pages/signin.js";
import * as spend from "./pages/spend.js";

const PAGES = [
  { path: "overview", module: overview },
  { path: "spend", module: spend },
  { path: "budgets", module: budgets },
  { path: "activity", module: activity },
  { path: "alerts", module: alerts },
  { path: "keys", module: keys },
];

const app = document.getElementById("app");
let current = null; // { api, projects, main, nav, live, mounted }

function parseHash() {
  const raw = location.hash.startsWith("#/") ? location.hash.slice(2) : "";
  const [path, query] = raw.split("?");
  const page = PAGES.find((p) => p.path === path) ?? PAGES[0];
  return { page, params: new URLSearchParams(query ?? "") };
}

function signOut(message) {
  current?.live.stop();
  current = null;
  session.clear();
  showSignIn(message);
}

function showSignIn(message) {
  document.title = "Sign in · Bursora";
  replace(app, signin.render({ message, onKey: startWithKey }));
  app.querySelector("input")?.focus();
}

/** Signs in with `key`: throws an ApiError the sign-in form shows when it is not accepted. */
async function startWithKey(key, remembered = session.load().project) {
  const api = new Api(key);
  const who = await api.whoami();
  session.save(key);
  api.onUnauthorized = () => signOut("The server no longer accepts this key (revoked?). Sign in again.");
  if (who.kind === "admin") {
    api.project = who.projects.some((p) => p.id === remembered) ? remembered : (who.projects[0]?.id ?? null);
    session.saveProject(api.project);
  }
  buildShell(api, who.projects);
  if (!location.hash.startsWith("#/")) history.replaceState(null, "", "#/overview");
  await route({ focus: false });
}

function projectPicker(api, projects) {
  if (api.kind !== "admin") {
    return h("div", { class: "project-label" }, h("span", { class: "muted" }, "Signed in with a project key"));
  }
  const select = h(
    "select",
    {
      id: "project-picker",
      onchange: async () => {
        api.project = select.value;
        session.saveProject(api.project);
        announce(`Project ${select.selectedOptions[0]?.textContent ?? ""}`);
        await route({ focus: false });
      },
    },
    projects.map((p) => h("option", { value: p.id, selected: p.id === api.project }, `${p.name} (${p.id})`)),
  );
  const create = h(
    "button",
    { type: "button", class: "ghost small", onclick: () => newProject(api) },
    "New project",
  );
  return h(
    "div",
    { class: "project-picker" },
    h("label", { for: "project-picker" }, "Project"),
    projects.length ? select : h("span", { class: "muted" }, "none yet"),
    create,
  );
}

/** Asks for a name and creates a project (admin). */
export async function newProject(api) {
  const created = await modal("New project", (close) => {
    const input = h("input", { type: "text", required: true, maxlength: 256, autocomplete: "off" });
    const error = h("p", { class: "form-error", role: "alert" });
    return h(
      "form",
      {
        onsubmit: async (e) => {
          e.preventDefault();
          try {
            close(await api.request("POST", "/v1/projects", { body: { name: input.value.trim() }, scoped: false }));
          } catch (err) {
            error.textContent = err.message;
          }
        },
      },
      field("Project name", input, "For example the product or environment: checkout-prod."),
      error,
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", class: "ghost", onclick: () => close(undefined) }, "Cancel"),
        h("button", { type: "submit", class: "primary" }, "Create project"),
      ),
    );
  });
  if (!created) return;
  toast(`Project ${created.name} created`, "success");
  const { projects } = await api.request("GET", "/v1/projects", { scoped: false });
  api.project = created.id;
  session.saveProject(created.id);
  buildShell(api, projects);
  await route({ focus: false });
}

function buildShell(api, projects) {
  current?.live.stop();
  const indicator = h("span", { class: "live-indicator", "aria-live": "off" });
  const nav = h(
    "nav",
    { class: "sidebar", "aria-label": "Main" },
    h(
      "ul",
      null,
      PAGES.map((p) => h("li", null, h("a", { href: `#/${p.path}`, dataset: { page: p.path } }, p.module.title))),
    ),
  );
  const main = h("main", { id: "main", tabindex: "-1" });
  const skip = h(
    "a",
    {
      class: "skip",
      href: "#main",
      onclick: (e) => {
        e.preventDefault();
        main.focus();
      },
    },
    "Skip to content",
  );
  replace(
    app,
    skip,
    h(
      "header",
      { class: "topbar" },
      h("div", { class: "brand" }, h("img", { src: "favicon.svg", alt: "", width: 22, height: 22 }), "Bursora"),
      projectPicker(api, projects),
      h("div", { class: "spacer" }),
      indicator,
      h("button", { type: "button", class: "ghost small", onclick: () => signOut() }, "Sign out"),
    ),
    h("div", { class: "layout" }, nav, main),
    h(
      "footer",
      { class: "footer" },
      "Times are UTC, like budget windows. Everything here comes from the public API: ",
      h("a", { href: "/v1/openapi.json" }, "OpenAPI document"),
      ".",
    ),
  );
  current = { api, projects, main, nav, live: new Live(indicator), mounted: 0 };
}

async function route({ focus = true } = {}) {
  if (!current) return;
  const { api, main, nav, live } = current;
  const { page, params } = parseHash();
  live.stop();
  current.mounted += 1;
  const mounted = current.mounted;
  for (const a of nav.querySelectorAll("a")) {
    if (a.dataset.page === page.path) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  document.title = `${page.module.title} · Bursora`;
  main.dataset.ready = "false";
  main.dataset.page = page.path;
  main.replaceChildren();
  if (api.kind === "admin" && !api.project) {
    replace(main, noProject(api));
    main.dataset.ready = "true";
    return;
  }
  const ctx = {
    api,
    params,
    projects: current.projects,
    /** Keeps page state (filters) in the URL without re-rendering. */
    setParams(values) {
      const q = new URLSearchParams(values);
      for (const [k, v] of [...q]) if (!v) q.delete(k);
      const text = q.toString();
      history.replaceState(null, "", `#/${page.path}${text ? `?${text}` : ""}`);
    },
    isCurrent: () => current && current.mounted === mounted,
  };
  try {
    const result = await page.module.mount(ctx, main);
    if (!ctx.isCurrent()) return;
    if (result?.tick) live.start(() => (ctx.isCurrent() ? result.tick() : undefined));
  } catch (e) {
    if (!ctx.isCurrent()) return;
    if (e instanceof ApiError && e.status === 401) return;
    replace(main, h("div", { class: "error-box", role: "alert" }, h("h2", null, "This page could not load"), h("p", null, e.message)));
  }
  if (!ctx.isCurrent()) return;
  main.dataset.ready = "true";
  performance.mark("bursora:ready");
  if (focus) main.querySelector("h1")?.focus();
}

function noProject(api) {
  return h(
    "section",
    { class: "page" },
    h("h1", { tabindex: "-1" }, "Create your first project"),
    h(
      "div",
      { class: "empty" },
      h(
        "p",
        null,
        "A project holds budgets, API keys and spend. Each application or environment usually gets its own, and one project's key can never see another's data.",
      ),
      h("button", { type: "button", class: "primary", onclick: () => newProject(api) }, "Create a project"),
    ),
  );
}

window.addEventListener("hashchange", () => {
  if (current && location.hash.startsWith("#/")) route();
});

(async () => {
  const { key } = session.load();
  if (!key) return showSignIn();
  try {
    await startWithKey(key);
  } catch (e) {
    session.clear();
    showSignIn(e instanceof ApiError && e.status === 401 ? "Your key is no longer accepted; sign in again." : e.message);
  }
})();
