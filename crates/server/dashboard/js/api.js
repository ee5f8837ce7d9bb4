// The only door to the server: the public /v1 API with `Authorization: Bearer <key>`.
// The key lives in this module's private field and in sessionStorage (gone when the tab
// closes); it is never put in a URL, a log line or the DOM.

const KEY = "bursora.key";
const PROJECT = "bursora.project";

export class ApiError extends Error {
  constructor(status, code, message, detail) {
    super(message);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

export class Api {
  #key;

  constructor(key) {
    this.#key = key;
    /** "admin" or "project", set by `whoami()`. */
    this.kind = null;
    /** The project an admin key acts in (`?project=`); null for project keys. */
    this.project = null;
    /** Called when the server no longer accepts the key (revoked, server reset). */
    this.onUnauthorized = null;
  }

  /** Finds out what the key is: an admin key may list projects, a project key may not. */
  async whoami() {
    try {
      const { projects } = await this.request("GET", "/v1/projects", { scoped: false });
      this.kind = "admin";
      return { kind: "admin", projects };
    } catch (e) {
      if (!(e instanceof ApiError) || e.status !== 403) throw e;
    }
    await this.request("GET", "/v1/budgets", { scoped: false });
    this.kind = "project";
    return { kind: "project", projects: [] };
  }

  get isAdmin() {
    return this.kind === "admin";
  }

  async request(method, path, { query, body, scoped = true } = {}) {
    const url = new URL(path, location.origin);
    if (scoped && this.kind === "admin" && this.project) url.searchParams.set("project", this.project);
    for (const [k, v] of Object.entries(query ?? {})) {
      if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, String(v));
    }
    const init = { method, headers: { Authorization: `Bearer ${this.#key}` }, cache: "no-store" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(url, init);
    } catch {
      throw new ApiError(0, "network", "The server did not answer. Is bursora-server running?");
    }
    if (res.status === 204) return null;
    const text = await res.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!res.ok) {
      const err = data?.error;
      const e = new ApiError(res.status, err?.code ?? `http_${res.status}`, err?.message ?? `HTTP ${res.status}`, err);
      if (res.status === 401 && this.onUnauthorized) this.onUnauthorized(e);
      throw e;
    }
    return data;
  }

  get(path, query) {
    return this.request("GET", path, { query });
  }

  post(path, body, query) {
    return this.request("POST", path, { body, query });
  }

  put(path, body) {
    return this.request("PUT", path, { body });
  }

  delete(path) {
    return this.request("DELETE", path);
  }
}

/** A route this server does not have yet (an older server): the page says so instead of failing. */
export function isMissingRoute(e) {
  // 404 for a path it lacks; 405 for a path it has with fewer methods (GET /v1/projects/{id}/keys).
  return e instanceof ApiError && ((e.status === 404 && /no such route/.test(e.message)) || e.status === 405);
}

export const session = {
  load() {
    return { key: sessionStorage.getItem(KEY), project: sessionStorage.getItem(PROJECT) };
  },
  save(key) {
    sessionStorage.setItem(KEY, key);
  },
  saveProject(project) {
    if (project) sessionStorage.setItem(PROJECT, project);
    else sessionStorage.removeItem(PROJECT);
  },
  clear() {
    sessionStorage.removeItem(KEY);
    sessionStorage.removeItem(PROJECT);
  },
};
