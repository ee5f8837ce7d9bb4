/**
 * `@bursora/sdk` — stop OpenAI calls before they spend money you have not budgeted.
 *
 * Every metered call is estimated and reserved against its budgets *before* it is sent; a call
 * that does not fit is refused with {@link BudgetExceededError} and the provider sees nothing.
 * When the call returns, the reservation is settled from the usage the provider reported.
 *
 * ```ts
 * import OpenAI from "openai";
 * import { wrap, withTags } from "@bursora/sdk";
 *
 * const openai = wrap(new OpenAI(), {
 *   budgets: [{ name: "per-tenant", match: { tenant_id: "*" }, limitUsd: 5, window: "day" }],
 * });
 * await withTags({ tenant_id: "acme" }, () =>
 *   openai.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }] }),
 * );
 * ```
 *
 * @packageDocumentation
 */

/** String → string labels attached to a call; budgets select calls by them (SPEC §1). */
export type Tags = Record<string, string>;

/** A budget window, calendar-aligned in UTC (weeks start Monday 00:00; `total` never resets). */
export type BudgetWindow = "minute" | "hour" | "day" | "week" | "month" | "total";

/**
 * Wraps a client so that its paid calls are metered, and returns the same client object.
 *
 * For the official `openai` client (v5–v7, including `AzureOpenAI`) it meters
 * `chat.completions.create` (and the `parse`, `stream` and `runTools` helpers, which go through
 * it), `responses.create` (and `parse`, `stream`) and `embeddings.create`. Everything else passes
 * through untouched. The returned value is the very object you passed (`instanceof OpenAI` holds,
 * `withResponse()`, `asResponse()`, `tee()` and `controller` keep working); `client.withOptions()`
 * returns a client metered by the same guard.
 *
 * Wrapping is idempotent: wrapping a client again does not meter twice; the latest guard and
 * default tags win.
 *
 * @param client An `OpenAI` (or `AzureOpenAI`) instance.
 * @param options A {@link Bursora} created with {@link createBursora} (to share one guard between
 *   clients), or {@link BursoraOptions} (a guard is created for this client only), or nothing (the
 *   process-wide default guard configured from the environment, see {@link getDefaultBursora}).
 * @throws {BursoraConfigError} the client is not a supported client, or the options are invalid.
 * @throws {TypeError} `options.tags` breaks the tag rules (see {@link withTags}).
 */
export declare function wrap<T>(client: T, options?: BursoraOptions | Bursora): T;

/**
 * Runs `fn` with `tags` attached to every metered call made inside it — across `await`,
 * `Promise.all`, timers and event emitters (it uses `AsyncLocalStorage`). Scopes nest: inner tags
 * are laid over outer ones, the inner value winning on the same key. Tags given to
 * `wrap(client, { tags })` come first, then the enclosing scopes.
 *
 * Rules: at most 32 tags after merging; keys up to 64 bytes of `[A-Za-z0-9_.:-]`; values are
 * strings up to 256 bytes. `provider` and `model` are matchable as if they were tags.
 *
 * @returns whatever `fn` returns (a Promise stays a Promise).
 * @throws {TypeError} here, before `fn` runs, when a tag breaks the rules — never at call time.
 */
export declare function withTags<R>(tags: Tags, fn: () => R): R;

/**
 * The tags of the enclosing {@link withTags} scopes, merged (inner wins); `{}` outside any scope.
 * Client default tags are not included. The object is frozen.
 */
export declare function currentTags(): Readonly<Tags>;

/**
 * Creates a guard: budgets, prices and a ledger, shared by every client it wraps.
 *
 * Embedded mode (the only mode today): the ledger lives in this process, or in the SQLite file
 * given by `db` / `BURSORA_DB`, which several processes on one machine share safely (budgets are
 * identified by `name`).
 *
 * Settlements are applied in the background; {@link Bursora.flush} waits for them. The guard
 * flushes once on the process's `beforeExit`; call {@link Bursora.shutdown} when you exit
 * yourself (e.g. `process.exit()` in a signal handler).
 *
 * @throws {BursoraConfigError} invalid options (a negative or non-finite `limitUsd`, an unknown
 *   `window`, `policy`, `mode`, `unknownModel` or `failMode`, a bad price, a `db` that cannot be
 *   opened), or server mode requested (`endpoint`/`apiKey` or `BURSORA_ENDPOINT`/`BURSORA_API_KEY`),
 *   which is not available in this version.
 * @throws {TypeError} `options.tags` breaks the tag rules (see {@link withTags}).
 */
export declare function createBursora(options?: BursoraOptions): Bursora;

/**
 * The process-wide guard used by `wrap(client)` without options, created on first use from the
 * environment: `BURSORA_DB` (SQLite ledger file; in-memory when unset), `BURSORA_FAIL_MODE`.
 * It has no budgets of its own (it records spend, and shares budgets declared on the same
 * `BURSORA_DB` file by name). It is shared by every copy of this package loaded in the process.
 *
 * @throws {BursoraConfigError} as {@link createBursora}.
 */
export declare function getDefaultBursora(): Bursora;

/** A guard: wraps clients and reports spend. Create one with {@link createBursora}. */
export interface Bursora {
  /**
   * Meters `client` with this guard and returns the same object; see {@link wrap}.
   * @param options.tags default tags for this client's calls, laid over the guard's `tags`.
   * @throws {BursoraConfigError} unsupported client.
   * @throws {TypeError} `options.tags` breaks the tag rules.
   */
  wrap<T>(client: T, options?: { tags?: Tags }): T;
  /**
   * One entry per budget (per distinct tag value for `"*"` templates) in its current window,
   * after every settlement handed over so far is applied.
   * @throws {BudgetUnavailableError} the ledger cannot be read (e.g. the SQLite file is gone).
   */
  spend(): Promise<BudgetStatus[]>;
  /** Resolves once every pending settlement is applied (and delivered, in server mode). */
  flush(): Promise<void>;
  /**
   * Flushes, then stops background work. Calls made after shutdown are not metered reliably;
   * calling it twice is harmless.
   */
  shutdown(): Promise<void>;
}

/** Options of {@link createBursora} and {@link wrap}. Every field is optional. */
export interface BursoraOptions {
  /**
   * Server mode: the URL of `bursora-server` (default: env `BURSORA_ENDPOINT`). Several replicas
   * may be given separated by commas; a replica that fails is skipped. Budgets then live in the
   * server (dashboard, `bursora-server budgets ...`): `budgets` and `db` are refused.
   */
  endpoint?: string;
  /** Server mode: a project API key (default: env `BURSORA_API_KEY`). */
  apiKey?: string;
  /** Embedded-mode budgets. Default: none (spend is recorded, nothing is refused). */
  budgets?: BudgetSpec[];
  /**
   * Path of the SQLite ledger file, shared safely by the processes of one machine
   * (default: env `BURSORA_DB`, else an in-memory ledger private to this guard).
   */
  db?: string;
  /** Default tags for every call of the clients this guard wraps. */
  tags?: Tags;
  /**
   * What happens when a call does not fit a budget. `"block"` (default): refuse it with
   * {@link BudgetExceededError}. `"fit"`: if the headroom still covers the input plus a minimum
   * output, reserve the headroom and cap the call — non-streaming requests get their
   * `max_completion_tokens` / `max_tokens` / `max_output_tokens` lowered (never raised); streams
   * are cut off with {@link BudgetCutoffError} when their output reaches the cap.
   */
  policy?: "block" | "fit";
  /**
   * When the ledger cannot decide (embedded: the SQLite file fails; server mode: the server does
   * not answer within `decisionTimeoutMs`, or is known to be away): `"open"` (default) lets the
   * call through with a warning — in server mode its usage is still counted, delivered to the
   * server when it is back; `"closed"` refuses it with {@link BudgetUnavailableError} before
   * dispatch. Default: env `BURSORA_FAIL_MODE`, else `"open"`.
   */
  failMode?: "open" | "closed";
  /**
   * A model with no known price: `"fallback"` (default) reserves and settles it at a conservative
   * fallback price and warns once; `"block"` refuses it with {@link UnknownModelError}.
   */
  unknownModel?: "fallback" | "block";
  /** Price overrides and additions, by model name, in USD per million tokens. */
  prices?: Record<string, ModelPrice>;
  /**
   * How long a reservation may stay open before it is settled at its reserved amount and marked
   * `expired` (SPEC §2.5). Live streams renew theirs every half TTL while chunks arrive.
   * Default: 600000 (10 minutes).
   */
  reservationTtlMs?: number;
  /**
   * Server mode: how long a call waits for the server's decision before `failMode` applies
   * (default 1000). After one such failure no call waits on the server again until a background
   * probe finds it back (a circuit breaker).
   */
  decisionTimeoutMs?: number;
  /**
   * Receives warnings (unknown model priced at the fallback, a budget limit changed by this
   * declaration, the ledger failing open, ...). Default: each warning code is printed once per
   * process to stderr through `process.emitWarning` (never stdout).
   */
  onWarning?: (warning: BursoraWarning) => void;
}

/** A warning raised by the guard. */
export interface BursoraWarning {
  /** Stable code, e.g. `unknown_model`, `budget_limit_changed`, `fail_open`. */
  code: string;
  /** What happened and what to do. */
  message: string;
}

/** A budget declared in code. */
export interface BudgetSpec {
  /** Identifies the budget: guards on the same `db` file that declare the same name share it. */
  name: string;
  /**
   * Which calls count: `{ key: "value" }` matches calls whose tag equals the value;
   * `{ key: "*" }` keeps one counter per distinct value (e.g. per tenant). Calls without the key
   * do not match. Empty or absent: every call. `provider` and `model` match as tags.
   */
  match?: Tags;
  /** The limit in USD per window; finite and ≥ 0. */
  limitUsd: number;
  /** The window the limit applies to, calendar-aligned in UTC. */
  window: BudgetWindow;
  /** `"block"` (default): a hard cap enforced before dispatch. `"notify"`: counted, never blocks. */
  mode?: "block" | "notify";
}

/** A model's price in USD per million tokens. */
export interface ModelPrice {
  inputPerMTok: number;
  outputPerMTok: number;
  /** Price of cached input tokens (default: the input price). */
  cachedInputPerMTok?: number;
  /** The model's largest output, used to bound requests that set no max tokens. */
  maxOutputTokens?: number;
}

/** One budget counter in its current window, as returned by {@link Bursora.spend}. */
export interface BudgetStatus {
  /** Stable id of the budget. */
  id: string;
  name: string;
  window: BudgetWindow;
  mode: "block" | "notify";
  match: Tags;
  /** `"key=value"` of the counter, for `"*"` templates; absent otherwise. */
  key?: string;
  limitUsd: number;
  /** Settled spend in this window. */
  spentUsd: number;
  /** Reserved by calls in flight. */
  reservedUsd: number;
  /** Spend beyond what was reserved (a provider ignored its limit), included in `spentUsd`. */
  overrunUsd: number;
  /** `spentUsd` exactly, in integer nano-USD (1 USD = 1e9); the ledger counts in these. */
  spentNanos: number;
  /** `reservedUsd` exactly, in integer nano-USD. */
  reservedNanos: number;
  /** When the window resets (ISO 8601, UTC); `null` for `total`. */
  resetsAt: string | null;
}

/** The budget that refused a call, as carried by {@link BudgetExceededError}. */
export interface RefusingBudget {
  id: string;
  name: string;
  window: BudgetWindow;
  /** `"key=value"` of the template counter that refused, when the budget is a template. */
  key?: string;
  limitUsd: number;
  spentUsd: number;
  reservedUsd: number;
  /** When the window resets (ISO 8601, UTC); `null` for `total`. */
  resetsAt: string | null;
}

/**
 * Codes of the errors this package throws:
 * - `budget_exceeded` ({@link BudgetExceededError}), `budget_cutoff` ({@link BudgetCutoffError}),
 *   `budget_unavailable` ({@link BudgetUnavailableError}), `unknown_model`
 *   ({@link UnknownModelError}), `config` ({@link BursoraConfigError});
 * - `invalid_input` (a plain {@link BursoraError}): the request body could not be read to
 *   estimate its cost (e.g. no `model`), so it was not sent;
 * - `internal`: a bug in Bursora.
 *
 * Refusals are rejected promises, like every openai error: `create()` itself never throws them.
 */
export type BursoraErrorCode =
  | "budget_exceeded"
  | "budget_cutoff"
  | "budget_unavailable"
  | "unknown_model"
  | "config"
  | "invalid_input"
  | "internal";

/** Base class of every error this package throws; `code` is stable, the message may change. */
export declare class BursoraError extends Error {
  constructor(code: BursoraErrorCode, message: string, options?: { cause?: unknown });
  readonly code: BursoraErrorCode;
}

/**
 * A call was refused before dispatch because it does not fit a `block` budget; nothing was
 * reserved and the provider saw no request. Wait for `budget.resetsAt`, raise the limit, lower the
 * request's max tokens, or use `policy: "fit"`.
 */
export declare class BudgetExceededError extends BursoraError {
  constructor(init: { message: string; budget: RefusingBudget; tags: Tags; model: string; estimatedUsd: number });
  readonly code: "budget_exceeded";
  /** The tightest budget the call did not fit. */
  readonly budget: RefusingBudget;
  /** The call's tags after merging (client defaults, scopes). */
  readonly tags: Tags;
  readonly model: string;
  /** The call's estimated upper bound in USD. */
  readonly estimatedUsd: number;
}

/**
 * Under `policy: "fit"`, a stream was cut off because its output reached the tokens the budget
 * could still pay for. It is thrown by the stream's iterator after the last chunk that fitted;
 * the chunks you received are real and were settled. `stream.finalChatCompletion()` and similar
 * helpers reject with it.
 */
export declare class BudgetCutoffError extends BursoraError {
  constructor(init: { model: string; tags: Tags; maxOutputTokens: number; reservedUsd: number });
  readonly code: "budget_cutoff";
  readonly model: string;
  readonly tags: Tags;
  /** Output tokens the reservation covered (per choice). */
  readonly maxOutputTokens: number;
  /** What was reserved for the call, in USD. */
  readonly reservedUsd: number;
}

/** The ledger could not decide and `failMode` is `"closed"`; the provider saw no request. */
export declare class BudgetUnavailableError extends BursoraError {
  constructor(message: string, options?: { cause?: unknown });
  readonly code: "budget_unavailable";
}

/**
 * The model has no known price and `unknownModel` is `"block"`; the provider saw no request.
 * Add its price with `prices: { [model]: { inputPerMTok, outputPerMTok } }`.
 */
export declare class UnknownModelError extends BursoraError {
  constructor(message: string, model: string);
  readonly code: "unknown_model";
  readonly model: string;
}

/** Invalid options, unsupported client, or a mode not available here; the message says which. */
export declare class BursoraConfigError extends BursoraError {
  constructor(message: string, options?: { cause?: unknown });
  readonly code: "config";
}
