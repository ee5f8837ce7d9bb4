// A guard: one NativeGuard (budgets, prices, ledger) plus what the JS side owns — default tags,
// fail mode, warning delivery and the flush at process exit. Users hold a small `Bursora`
// facade; the Guard behind it stays private.

import type * as Api from "../index.js";
import {
  BudgetExceededError,
  BudgetUnavailableError,
  BursoraConfigError,
  BursoraError,
  UnknownModelError,
  messageOf,
  nativeCode,
} from "./errors.js";
import { makeDefaults, type TagDefaults } from "./context.js";
import {
  hot,
  native,
  tagsSlot,
  type HotBinding,
  type NativeAdmission,
  type NativeBudgetStatus,
  type NativeGuard,
  type NativeRefusal,
  type NativeTags,
  type NativeWarning,
} from "./internal/native.js";

type Options = Api.BursoraOptions;

const WINDOWS: ReadonlySet<string> = new Set(["minute", "hour", "day", "week", "month", "total"]);
const OPTION_KEYS: ReadonlySet<string> = new Set([
  "endpoint", "apiKey", "budgets", "db", "tags", "policy", "failMode", "unknownModel", "prices",
  "decisionTimeoutMs", "onWarning", "reservationTtlMs",
]);

/** SPEC §2.5: a reservation not settled within this is settled at its amount. */
const DEFAULT_RESERVATION_TTL_MS = 10 * 60_000;

/** Options in the exact shape the addon accepts (it rejects unknown fields). */
interface NativeOptions {
  budgets?: { name: string; match?: Api.Tags; limitUsd: number; window: string; mode?: string }[];
  db?: string;
  policy?: string;
  unknownModel?: string;
  prices?: Record<string, Api.ModelPrice>;
  reservationTtlMs?: number;
  endpoint?: string;
  apiKey?: string;
  failMode?: string;
  decisionTimeoutMs?: number;
}

function env(name: string): string | undefined {
  const value = process.env[name];
  return value === undefined || value === "" ? undefined : value;
}

function oneOf(value: unknown, allowed: readonly string[], what: string): void {
  if (value !== undefined && !allowed.includes(value as string)) {
    throw new BursoraConfigError(
      `${what} must be ${allowed.map((a) => JSON.stringify(a)).join(" or ")}, got ${JSON.stringify(value)}`,
    );
  }
}

function nonNegative(value: unknown, what: string): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0) {
    throw new BursoraConfigError(`${what} must be a finite number ≥ 0, got ${String(value)}`);
  }
  return value;
}

/** Validates options with messages that say what to fix; the addon re-checks the rest. */
function toNativeOptions(options: Options): NativeOptions {
  if (options === null || typeof options !== "object") {
    throw new BursoraConfigError("Bursora options must be an object, e.g. { budgets: [...] }");
  }
  for (const key of Object.keys(options)) {
    if (!OPTION_KEYS.has(key)) {
      throw new BursoraConfigError(
        `Unknown Bursora option ${JSON.stringify(key)}; known options: ${[...OPTION_KEYS].join(", ")}`,
      );
    }
  }
  const endpoint = options.endpoint ?? env("BURSORA_ENDPOINT");
  const apiKey = options.apiKey ?? env("BURSORA_API_KEY");
  if (endpoint !== undefined && typeof endpoint !== "string") {
    throw new BursoraConfigError("`endpoint` must be the URL of bursora-server, e.g. \"http://127.0.0.1:8787\"");
  }
  if (apiKey !== undefined && typeof apiKey !== "string") throw new BursoraConfigError("`apiKey` must be a string");
  if (endpoint === undefined && apiKey !== undefined) {
    throw new BursoraConfigError(
      `An API key is set (${options.apiKey !== undefined ? "the `apiKey` option" : "BURSORA_API_KEY"}) but no ` +
        `server: set BURSORA_ENDPOINT (or the \`endpoint\` option) to bursora-server's URL, or unset the key ` +
        `to run in embedded mode.`,
    );
  }
  if (endpoint !== undefined && apiKey === undefined) {
    throw new BursoraConfigError(
      `Server mode (${options.endpoint !== undefined ? "the `endpoint` option" : "BURSORA_ENDPOINT"}) needs a ` +
        `project key: set BURSORA_API_KEY (or the \`apiKey\` option) to a key from \`bursora-server keys create\`.`,
    );
  }
  oneOf(options.policy, ["block", "fit"], "`policy`");
  oneOf(options.unknownModel, ["fallback", "block"], "`unknownModel`");
  oneOf(options.failMode, ["open", "closed"], "`failMode`");
  oneOf(env("BURSORA_FAIL_MODE"), ["open", "closed"], "BURSORA_FAIL_MODE");
  if (options.decisionTimeoutMs !== undefined && !(nonNegative(options.decisionTimeoutMs, "`decisionTimeoutMs`") > 0)) {
    throw new BursoraConfigError("`decisionTimeoutMs` must be > 0");
  }
  if (options.onWarning !== undefined && typeof options.onWarning !== "function") {
    throw new BursoraConfigError("`onWarning` must be a function ({ code, message }) => void");
  }

  const out: NativeOptions = {};
  if (endpoint !== undefined && apiKey !== undefined) {
    out.endpoint = endpoint;
    out.apiKey = apiKey;
    const failMode = options.failMode ?? env("BURSORA_FAIL_MODE");
    if (failMode !== undefined) out.failMode = failMode;
    if (options.decisionTimeoutMs !== undefined) out.decisionTimeoutMs = options.decisionTimeoutMs;
  }
  if (options.budgets !== undefined) {
    if (!Array.isArray(options.budgets)) {
      throw new BursoraConfigError("`budgets` must be an array of { name, limitUsd, window, match?, mode? }");
    }
    out.budgets = options.budgets.map((b: Api.BudgetSpec, i) => {
      const at = `budgets[${i}]`;
      if (b === null || typeof b !== "object") throw new BursoraConfigError(`${at} must be an object`);
      if (typeof b.name !== "string" || b.name.trim() === "") {
        throw new BursoraConfigError(`${at}.name must be a non-empty string: it identifies the budget`);
      }
      const name = `budget ${JSON.stringify(b.name)}`;
      nonNegative(b.limitUsd, `${name}: limitUsd`);
      if (!WINDOWS.has(b.window)) {
        throw new BursoraConfigError(
          `${name}: window must be one of ${[...WINDOWS].join(", ")}, got ${JSON.stringify(b.window)}`,
        );
      }
      oneOf(b.mode, ["block", "notify"], `${name}: mode`);
      const spec: NonNullable<NativeOptions["budgets"]>[number] = { name: b.name, limitUsd: b.limitUsd, window: b.window };
      if (b.match !== undefined) spec.match = b.match;
      if (b.mode !== undefined) spec.mode = b.mode;
      return spec;
    });
  }
  // BURSORA_DB is for embedded mode; in server mode only an explicit `db` is a conflict.
  const db = options.db ?? (endpoint === undefined ? env("BURSORA_DB") : undefined);
  if (db !== undefined) {
    if (typeof db !== "string") throw new BursoraConfigError("`db` must be a file path");
    out.db = db;
  }
  if (options.policy !== undefined) out.policy = options.policy;
  if (options.unknownModel !== undefined) out.unknownModel = options.unknownModel;
  if (options.prices !== undefined) {
    if (options.prices === null || typeof options.prices !== "object") {
      throw new BursoraConfigError("`prices` must map model names to { inputPerMTok, outputPerMTok }");
    }
    for (const [model, p] of Object.entries(options.prices)) {
      const at = `prices[${JSON.stringify(model)}]`;
      if (p === null || typeof p !== "object") throw new BursoraConfigError(`${at} must be { inputPerMTok, outputPerMTok }`);
      nonNegative(p.inputPerMTok, `${at}.inputPerMTok`);
      nonNegative(p.outputPerMTok, `${at}.outputPerMTok`);
      if (p.cachedInputPerMTok !== undefined) nonNegative(p.cachedInputPerMTok, `${at}.cachedInputPerMTok`);
      if (p.maxOutputTokens !== undefined) nonNegative(p.maxOutputTokens, `${at}.maxOutputTokens`);
    }
    out.prices = options.prices;
  }
  if (options.reservationTtlMs !== undefined) {
    if (!(nonNegative(options.reservationTtlMs, "`reservationTtlMs`") >= 1000)) {
      throw new BursoraConfigError("`reservationTtlMs` must be at least 1000 (one second)");
    }
    out.reservationTtlMs = options.reservationTtlMs;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Warnings: the default sink prints each code once per process (shared by every copy of the
// package) on stderr through process.emitWarning, which `--no-warnings` silences; never stdout.

const WARNED_KEY = Symbol.for("bursora.sdk.warned");
const warnedStore = globalThis as { [WARNED_KEY]?: Set<string> };
const warned: Set<string> = (warnedStore[WARNED_KEY] ??= new Set<string>());

function defaultOnWarning(w: Api.BursoraWarning): void {
  if (warned.has(w.code)) return;
  warned.add(w.code);
  process.emitWarning(w.message, { type: "BursoraWarning", code: `BURSORA_${w.code.toUpperCase()}` });
}

// ---------------------------------------------------------------------------------------------
// Flush at exit: `beforeExit` fires whenever the loop runs dry. Only guards that settled calls
// since their last flush are flushed, so once that flush is done the next `beforeExit` finds
// nothing to do and the process exits — the listener never keeps the loop alive forever.

// Weak: a guard made for one client (`wrap(client, options)`) must not outlive that client.
const live = new Set<WeakRef<Guard>>();
let exitHooked = false;

function onBeforeExit(): void {
  for (const ref of live) {
    const guard = ref.deref();
    if (guard === undefined) live.delete(ref);
    else if (guard.dirty) void guard.flush().catch(() => undefined);
  }
}

// ---------------------------------------------------------------------------------------------

export class Guard {
  readonly native: NativeGuard;
  /** The per-call functions, and this guard's slot that they take. */
  readonly hot: HotBinding;
  readonly slot: number;
  /** The guard's own default tags (`options.tags`), or null. */
  readonly defaults: TagDefaults | null;
  readonly failClosed: boolean;
  /** Reservations go to bursora-server: admissions are asynchronous (`admitAsync`). */
  readonly remote: boolean;
  /** A live stream renews its reservation after this long (half the reservation TTL). */
  readonly keepAliveMs: number;
  /** Settlements were handed to the addon since the last flush. */
  dirty = false;
  readonly #onWarning: (w: Api.BursoraWarning) => void;
  #stopped = false;
  readonly #ref = new WeakRef(this);

  constructor(options: Options = {}) {
    const nativeOptions = toNativeOptions(options);
    this.defaults = options.tags === undefined ? null : makeDefaults(null, options.tags, "createBursora({ tags })");
    this.failClosed = (options.failMode ?? env("BURSORA_FAIL_MODE")) === "closed";
    this.#onWarning = options.onWarning ?? defaultOnWarning;
    this.keepAliveMs = (nativeOptions.reservationTtlMs ?? DEFAULT_RESERVATION_TTL_MS) / 2;
    try {
      this.native = new (native().NativeGuard)(JSON.stringify(nativeOptions));
    } catch (err) {
      if (err instanceof BursoraError) throw err;
      throw new BursoraConfigError(`Invalid Bursora options: ${messageOf(err)}`, { cause: err });
    }
    this.remote = this.native.remote;
    this.hot = hot();
    this.slot = this.native.slot;
    // Warnings raised while building (e.g. a budget limit changed by this declaration).
    this.drainWarnings();
    live.add(this.#ref);
    if (!exitHooked) {
      exitHooked = true;
      process.on("beforeExit", onBeforeExit);
    }
  }

  /**
   * Reserves one call. Returns the reservation id when it was reserved in full without
   * warnings (the common case), else the admission; null when the ledger failed and `failMode`
   * is open (the call then goes out unmetered). Throws the refusal as a typed error.
   */
  admit(endpoint: number, bodyJson: string, tags: NativeTags | null, baseURL: string | null): string | NativeAdmission | null {
    let admission: string | NativeAdmission;
    try {
      admission = this.hot.admit(this.slot, endpoint, bodyJson, tagsSlot(tags), baseURL);
    } catch (err) {
      return this.#admitFailed(err);
    }
    if (typeof admission === "string") {
      this.dirty = true;
      return admission;
    }
    if (admission.warnings !== undefined && admission.warnings !== null) this.deliver(admission.warnings);
    if (!admission.ok) throw refusalError(admission.refusal, tags);
    this.dirty = true;
    return admission;
  }

  /**
   * Server mode: reserves one call on bursora-server. Resolves with the admission (possibly
   * unreserved, when the server could not decide and `failMode` is open); rejects with the
   * refusal as a typed error.
   */
  async admitAsync(endpoint: number, bodyJson: string, tags: NativeTags | null, baseURL: string | null): Promise<NativeAdmission> {
    const admission = await this.native.admitAsync(endpoint, bodyJson, tags, null, baseURL);
    if (admission.warnings !== undefined && admission.warnings !== null) this.deliver(admission.warnings);
    if (!admission.ok) throw refusalError(admission.refusal, tags);
    this.dirty = true;
    return admission;
  }

  #admitFailed(err: unknown): null {
    const code = nativeCode(err);
    if (code === "invalid_input") {
      throw new BursoraError(
        "invalid_input",
        `Bursora could not read this request to estimate its cost, so it was not sent: ${messageOf(err)}`,
        { cause: err },
      );
    }
    if (this.failClosed) {
      throw new BudgetUnavailableError(
        `The budget ledger could not decide (${messageOf(err)}), and failMode is "closed", so the ` +
          `call was not sent. Check the BURSORA_DB file (permissions, disk space), or use failMode "open".`,
        { cause: err },
      );
    }
    this.deliver([
      {
        code: "fail_open",
        message:
          `The budget ledger could not decide (${messageOf(err)}); failMode is "open", so calls go ` +
          `out unmetered until it recovers. Check the BURSORA_DB file, or use failMode "closed".`,
      },
    ]);
    return null;
  }

  deliver(warnings: readonly NativeWarning[]): void {
    for (const w of warnings) {
      try {
        this.#onWarning({ code: w.code, message: w.message });
      } catch {
        // A failing hook must not fail the call that raised the warning.
      }
    }
  }

  drainWarnings(): void {
    const warnings = this.native.takeWarnings();
    if (warnings.length > 0) this.deliver(warnings);
  }

  async spend(): Promise<Api.BudgetStatus[]> {
    let rows: NativeBudgetStatus[];
    try {
      rows = await this.native.spend();
    } catch (err) {
      const message = messageOf(err);
      if (message.startsWith("[config]")) throw new BursoraConfigError(message.slice(9), { cause: err });
      throw new BudgetUnavailableError(
        `Bursora could not read the budgets: ${message.replace(/^\[[a-z_]+\] /, "")}`,
        { cause: err },
      );
    } finally {
      this.drainWarnings();
    }
    return rows.map(toBudgetStatus);
  }

  async flush(): Promise<void> {
    this.dirty = false;
    await this.native.flush();
    this.drainWarnings();
  }

  async shutdown(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    live.delete(this.#ref);
    this.dirty = false;
    await this.native.shutdown();
    this.drainWarnings();
  }
}

function toBudgetStatus(s: NativeBudgetStatus): Api.BudgetStatus {
  const status: Api.BudgetStatus = {
    id: s.id,
    name: s.name,
    window: s.window as Api.BudgetWindow,
    mode: s.mode as "block" | "notify",
    match: s.match,
    limitUsd: s.limitUsd,
    spentUsd: s.spentUsd,
    reservedUsd: s.reservedUsd,
    overrunUsd: s.overrunUsd,
    spentNanos: s.spentNanos,
    reservedNanos: s.reservedNanos,
    resetsAt: s.resetsAt ?? null,
  };
  if (s.key !== undefined && s.key !== null) status.key = s.key;
  return status;
}

function refusalError(refusal: NativeRefusal | undefined | null, tags: NativeTags | null): BursoraError {
  if (refusal === undefined || refusal === null) {
    return new BursoraError("internal", "Bursora refused the call without a reason (a bug in bursora)");
  }
  if (refusal.code === "unknown_model") return new UnknownModelError(refusal.message, refusal.model);
  if (refusal.code === "budget_unavailable") return new BudgetUnavailableError(refusal.message);
  if (refusal.code === "invalid_input") {
    return new BursoraError(
      "invalid_input",
      `Bursora could not read this request to estimate its cost, so it was not sent: ${refusal.message}`,
    );
  }
  if (refusal.code !== "budget_exceeded") return new BursoraError(refusal.code as Api.BursoraErrorCode, refusal.message);
  const b = refusal.budget;
  const budget: Api.RefusingBudget = {
    id: b?.id ?? "",
    name: b?.name ?? "",
    window: (b?.window ?? "total") as Api.BudgetWindow,
    limitUsd: b?.limitUsd ?? 0,
    spentUsd: b?.spentUsd ?? 0,
    reservedUsd: b?.reservedUsd ?? 0,
    resetsAt: b?.resetsAt ?? null,
  };
  if (b?.key !== undefined && b.key !== null) budget.key = b.key;
  return new BudgetExceededError({
    message: refusal.message,
    budget,
    // Only built on refusal: the happy path never materialises the tags object.
    tags: Object.freeze(tags === null ? {} : tags.entries()),
    model: refusal.model,
    estimatedUsd: refusal.estimatedUsd ?? 0,
  });
}
