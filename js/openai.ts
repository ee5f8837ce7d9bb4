// Metering of the official `openai` client (v5–v7).
//
// How it hooks in, and why (see STYLE.md, "wrap without changing what the user holds"):
// - `create` is replaced by an own property on the client's resource instances
//   (`client.chat.completions`, `client.responses`, `client.embeddings`) that calls the prototype
//   method bound to the real resource, so the client keeps its identity, `instanceof`, and its
//   private fields. Only `create` is patched: `parse`, `stream`, `runTools` (v6 and v7) call
//   `this._client.<resource>.create`, so they are metered once, through it.
// - The caller gets the very APIPromise `create` returned (`withResponse()`, `asResponse()`,
//   `_thenUnwrap()` keep working). Accounting hangs on it without consuming it:
//   * its `parseResponse` (an instance field every parse path goes through, including promises
//     derived by `_thenUnwrap`) is wrapped to see the parsed result or the `Stream`;
//   * a side chain on `responsePromise` sees HTTP errors, and the raw `Response` of calls that
//     are never parsed (only `.asResponse()`, or nobody awaited them): their body is read from a
//     `clone()` made before the caller can touch it.
// - Server mode reserves over the network, so the decision cannot be made before `create`
//   returns. The request is handed to openai at once (the caller still gets openai's own
//   APIPromise), and dispatch waits in the client's `prepareOptions` — the async hook every
//   request passes through before it is built and sent (v5–v7) — until the reservation is
//   decided: a refusal rejects the request there, before the provider sees anything.
// - A `Stream` is observed by replacing its `iterator` field, the one source that
//   `[Symbol.asyncIterator]`, `tee()` and `toReadableStream()` all read, so `controller` and
//   those helpers behave as before.

import type * as Api from "../index.js";
import { BudgetCutoffError, BursoraConfigError } from "./errors.js";
import { callTags, makeDefaults, type TagDefaults } from "./context.js";
import type { Guard } from "./guard.js";
import { Endpoint, chatUsageFields, type HotBinding, type NativeAdmission, type NativeTags } from "./internal/native.js";

/** The parts of an OpenAI client we rely on. */
interface OpenAILike {
  baseURL: string;
  chat: { completions: Resource };
  responses?: Resource;
  embeddings?: Resource;
  withOptions?: (...args: unknown[]) => unknown;
}

interface Resource {
  create(body: unknown, options?: unknown): unknown;
}

/** What a wrapped client is metered by; replaced in place when the client is wrapped again. */
interface ClientMeter {
  guard: Guard;
  defaults: TagDefaults | null;
}

type Body = Record<string, unknown>;

/** The parts of openai's APIPromise we hook (identical in v5, v6 and v7). */
interface APIPromiseLike extends Promise<unknown> {
  responsePromise: Promise<{ response: Response }>;
  parseResponse: (client: unknown, props: { response: Response }) => unknown;
  parsedPromise?: Promise<unknown>;
  _thenUnwrap: (transform: (value: unknown, props: unknown) => unknown) => unknown;
  [CALL]?: Call;
}

/** The parts of openai's Stream we hook. */
interface StreamLike {
  iterator: () => AsyncIterator<unknown>;
  controller: AbortController;
}

const METER = Symbol.for("bursora.sdk.meter");
const CALL = Symbol("bursora.call");
const PREPARE_HOOKED = Symbol("bursora.prepareOptions");

/** A server-mode call waiting for its reservation, keyed by the body object we hand openai. */
interface Pending {
  admitting: Promise<NativeAdmission>;
  call: Call;
  endpoint: Endpoint;
}

const pending = new WeakMap<object, Pending>();

export function isOpenAIClient(client: unknown): client is OpenAILike {
  const c = client as Partial<OpenAILike> | null;
  return (
    typeof c === "object" &&
    c !== null &&
    typeof c.baseURL === "string" &&
    typeof c.chat?.completions?.create === "function"
  );
}

export function unsupportedClient(client: unknown): BursoraConfigError {
  const what =
    client === null ? "null"
    : typeof client === "object" ? (client.constructor?.name ?? "an object")
    : typeof client;
  return new BursoraConfigError(
    `wrap() got ${what}, which Bursora cannot meter. Supported: clients of the official \`openai\` ` +
      `package v5–v7 (new OpenAI(), new AzureOpenAI(), or any client with chat.completions.create ` +
      `and baseURL).`,
  );
}

/**
 * Meters `client` with `guard`. `tags` are the client's own defaults, laid over the guard's.
 * Idempotent: a client wrapped again keeps its patches and switches to the new guard and tags.
 */
export function wrapOpenAI<T extends OpenAILike>(client: T, guard: Guard, tags: Api.Tags | undefined): T {
  const defaults = tags === undefined ? guard.defaults : makeDefaults(guard.defaults, tags, "wrap(client, { tags })");
  return attach(client, guard, defaults);
}

function attach<T extends OpenAILike>(client: T, guard: Guard, defaults: TagDefaults | null): T {
  const existing = (client as { [METER]?: ClientMeter })[METER];
  if (existing !== undefined) {
    existing.guard = guard;
    existing.defaults = defaults;
    return client;
  }
  const meter: ClientMeter = { guard, defaults };
  Object.defineProperty(client, METER, { value: meter, configurable: true });
  patchCreate(client, client.chat.completions, Endpoint.ChatCompletions, meter);
  if (typeof client.responses?.create === "function") patchCreate(client, client.responses, Endpoint.Responses, meter);
  if (typeof client.embeddings?.create === "function") patchCreate(client, client.embeddings, Endpoint.Embeddings, meter);
  // `withOptions()` builds a fresh client: meter it like the one it came from.
  const withOptions = client.withOptions;
  if (typeof withOptions === "function") {
    Object.defineProperty(client, "withOptions", {
      value: function withOptionsMetered(this: unknown, ...args: unknown[]): unknown {
        const derived = withOptions.apply(this, args);
        return isOpenAIClient(derived) ? attach(derived, meter.guard, meter.defaults) : derived;
      },
      writable: true,
      configurable: true,
    });
  }
  return client;
}

function patchCreate(client: OpenAILike, resource: Resource, endpoint: Endpoint, meter: ClientMeter): void {
  const create = resource.create;
  Object.defineProperty(resource, "create", {
    value: function create_(body: unknown, options?: unknown): unknown {
      return meteredCall(client, resource, create, endpoint, meter, body, options);
    },
    writable: true,
    configurable: true,
  });
}

function meteredCall(
  client: OpenAILike,
  resource: Resource,
  create: Resource["create"],
  endpoint: Endpoint,
  meter: ClientMeter,
  body: unknown,
  options: unknown,
): unknown {
  // Anything we cannot read as a request body goes through untouched: openai reports it.
  if (body === null || typeof body !== "object") return create.call(resource, body, options);
  const request = body as Body;
  const guard = meter.guard;
  let json: string;
  try {
    json = JSON.stringify(request);
  } catch {
    return create.call(resource, body, options); // e.g. a cycle: openai will fail to send it too
  }
  if (guard.remote) return meteredCallRemote(client, resource, create, endpoint, guard, meter, request, json, options);
  let tags: NativeTags | null;
  let admitted: string | NativeAdmission | null;
  try {
    tags = callTags(meter.defaults);
    admitted = guard.admit(endpoint, json, tags, client.baseURL);
  } catch (err) {
    return refused(err); // the provider sees nothing
  }
  if (admitted === null) return create.call(resource, body, options); // ledger down, fail-open
  // The common case is only the reservation id: reserved in full, nothing to cap.
  const admission = typeof admitted === "string" ? null : admitted;

  const stream = request.stream === true;
  const call = new Call(guard, admitted, endpoint, request, tags, stream);
  let sent = request;
  if (stream && endpoint === Endpoint.ChatCompletions) {
    // Ask for the usage chunk (SPEC §2.3) without losing the caller's other stream options.
    const streamOptions = request.stream_options as Body | null | undefined;
    if (streamOptions?.include_usage !== true) {
      sent = { ...request, stream_options: { ...streamOptions, include_usage: true } };
      call.hideUsageChunk = true;
    }
  } else if (admission?.capped === true && !stream && typeof admission.maxOutputTokens === "number") {
    sent = capped(endpoint, request, admission.maxOutputTokens);
  }

  call.abortedBeforeSend = (options as { signal?: AbortSignal } | null | undefined)?.signal?.aborted === true;
  let result: unknown;
  try {
    result = create.call(resource, sent, options);
  } catch (err) {
    call.failed(); // thrown before anything was sent
    throw err;
  }
  hook(result, call);
  return result;
}

/** Server mode: see the header. Returns openai's APIPromise; dispatch waits for the decision. */
function meteredCallRemote(
  client: OpenAILike,
  resource: Resource,
  create: Resource["create"],
  endpoint: Endpoint,
  guard: Guard,
  meter: ClientMeter,
  request: Body,
  json: string,
  options: unknown,
): unknown {
  let tags: NativeTags | null;
  try {
    tags = callTags(meter.defaults);
  } catch (err) {
    return refused(err);
  }
  if (!hookPrepareOptions(client)) {
    return refused(
      new BursoraConfigError(
        "This client has no prepareOptions hook, so Bursora's server mode cannot hold its requests " +
          "until bursora-server decides. Use the official `openai` package v5–v7.",
      ),
    );
  }
  const admitting = guard.admitAsync(endpoint, json, tags, client.baseURL);
  // The rejection is delivered through prepareOptions; this only keeps it from being reported
  // as unhandled when the request never gets that far.
  admitting.catch(() => undefined);
  const stream = request.stream === true;
  const call = new Call(guard, null, endpoint, request, tags, stream);
  // Always our own copy: it is the key prepareOptions finds this call by, and a caller may send
  // one body object several times at once.
  const sent: Body = { ...request };
  if (stream && endpoint === Endpoint.ChatCompletions) {
    const streamOptions = request.stream_options as Body | null | undefined;
    if (streamOptions?.include_usage !== true) {
      sent.stream_options = { ...streamOptions, include_usage: true };
      call.hideUsageChunk = true;
    }
  }
  pending.set(sent, { admitting, call, endpoint });
  call.abortedBeforeSend = (options as { signal?: AbortSignal } | null | undefined)?.signal?.aborted === true;
  let result: unknown;
  try {
    result = create.call(resource, sent, options);
  } catch (err) {
    pending.delete(sent);
    // Nothing was sent: give back whatever gets reserved.
    admitting.then(
      (admission) => {
        call.admitted(admission);
        call.failed();
      },
      () => undefined,
    );
    throw err;
  }
  hook(result, call);
  return result;
}

/** Installs the dispatch gate on `client` once; false when it has no prepareOptions hook. */
function hookPrepareOptions(client: OpenAILike): boolean {
  const target = client as OpenAILike & { [PREPARE_HOOKED]?: true; prepareOptions?: (options: unknown) => Promise<void> };
  if (target[PREPARE_HOOKED] === true) return true;
  const original = target.prepareOptions;
  if (typeof original !== "function") return false;
  Object.defineProperty(target, PREPARE_HOOKED, { value: true, configurable: true });
  Object.defineProperty(target, "prepareOptions", {
    value: async function prepareOptionsMetered(this: unknown, options: { body?: unknown; signal?: AbortSignal | null }): Promise<void> {
      const body = options?.body;
      const waiting = body !== null && typeof body === "object" ? pending.get(body) : undefined;
      if (waiting !== undefined) {
        pending.delete(body as object);
        // A refusal throws here: the request is never built, the provider sees nothing.
        const admission = await waiting.admitting;
        const call = waiting.call;
        call.admitted(admission);
        if (options.signal?.aborted === true) call.abortedBeforeSend = true;
        if (admission.capped === true && !call.stream && typeof admission.maxOutputTokens === "number") {
          options.body = capped(waiting.endpoint, body as Body, admission.maxOutputTokens);
        }
      }
      return original.call(this, options);
    },
    writable: true,
    configurable: true,
  });
  return true;
}

/**
 * A refused call, shaped like openai's APIPromise: it rejects like any failed call would, and
 * its helper methods (`withResponse()`, `asResponse()`, `parse()`, `_thenUnwrap()` used by the
 * `.parse()`/`.stream()` helpers) reject with the same error instead of failing with a TypeError.
 */
function refused(err: unknown): Promise<never> {
  const promise = Promise.reject(err) as Promise<never> & Record<string, () => Promise<never>>;
  const same = (): Promise<never> => promise;
  promise.withResponse = same;
  promise.asResponse = same;
  promise.parse = same;
  promise._thenUnwrap = same;
  return promise;
}

/** Lowers the request's max output tokens to `max` (never raises them). Copies, never mutates. */
function capped(endpoint: Endpoint, body: Body, max: number): Body {
  if (endpoint === Endpoint.Responses) {
    const current = body.max_output_tokens;
    return typeof current === "number" && current <= max ? body : { ...body, max_output_tokens: max };
  }
  if (endpoint !== Endpoint.ChatCompletions) return body;
  // Keep the caller's field: older models and compatible servers only know `max_tokens`.
  if (typeof body.max_tokens === "number" && body.max_completion_tokens == null) {
    return body.max_tokens <= max ? body : { ...body, max_tokens: max };
  }
  const current = body.max_completion_tokens;
  return typeof current === "number" && current <= max ? body : { ...body, max_completion_tokens: max };
}

function isAPIPromise(value: unknown): value is APIPromiseLike {
  if (!(value instanceof Promise)) return false;
  const p = value as Partial<APIPromiseLike>;
  return typeof p.parseResponse === "function" && p.responsePromise instanceof Promise;
}

function hook(result: unknown, call: Call): void {
  if (isAPIPromise(result)) {
    result[CALL] = call;
    call.original = result.parseResponse;
    result.parseResponse = parseResponseMetered;
    if (typeof result._thenUnwrap === "function") {
      call.thenUnwrap = result._thenUnwrap;
      result._thenUnwrap = thenUnwrapMetered;
    }
    result.responsePromise.then(
      (props) => call.responded(result, props.response),
      (err: unknown) => call.rejected(err),
    );
  } else if (result instanceof Promise) {
    // Not an openai APIPromise (a mock, a custom fetch wrapper): observe a side chain.
    result.then(
      (value: unknown) => call.parsed(value),
      (err: unknown) => call.rejected(err),
    );
  } else {
    call.unknown();
  }
}

/**
 * Installed as `_thenUnwrap` on hooked APIPromises. openai v7 gives each promise its own
 * `_thenUnwrap` that parses without going through `this.parseResponse` (used by the `.parse()`
 * and `.stream()` helpers), so the derived promise's transform is where we see the result.
 */
function thenUnwrapMetered(
  this: APIPromiseLike,
  transform: (value: unknown, props: unknown) => unknown,
): unknown {
  const call = this[CALL]!;
  call.unwrapped = true;
  return call.thenUnwrap!.call(this, (value: unknown, props: unknown) => transform(call.parsed(value), props));
}

/** Installed as `parseResponse` on hooked APIPromises; shared, so hooking allocates nothing. */
function parseResponseMetered(this: APIPromiseLike, client: unknown, props: { response: Response }): unknown {
  const call = this[CALL]!;
  let out: unknown;
  try {
    out = call.original!.call(this, client, props);
  } catch (err) {
    call.unknown();
    throw err;
  }
  if (out instanceof Promise) {
    // A side chain, not a link in the caller's: its reaction is registered before openai's, so
    // it still sees (and instruments) a Stream before the caller does, without an extra promise
    // and turn on the caller's path. The caller gets `out`'s own rejection.
    out.then(
      (value: unknown) => {
        try {
          call.parsed(value);
        } catch {
          call.unknown(); // never an unhandled rejection on this side chain
        }
      },
      () => call.unknown(),
    );
    return out;
  }
  return call.parsed(out);
}

/**
 * One metered call: its reservation, finished exactly once (SPEC §2.4), and for streams what
 * was seen of them.
 */
class Call {
  readonly #hot: HotBinding;
  readonly #slot: number;
  readonly #owner: Guard;
  /** Unset until admitted (server mode decides after the call was made; a refusal never is). */
  #id: string | undefined;
  #admission: NativeAdmission | null;
  readonly #endpoint: Endpoint;
  readonly #request: Body;
  readonly #tags: NativeTags | null;
  readonly stream: boolean;
  #done = false;
  /** Chat streams: hide the usage-only chunk we asked for. */
  hideUsageChunk = false;
  /** The caller's signal was already aborted when the call was made: nothing was sent. */
  abortedBeforeSend = false;
  /** The APIPromise's own parseResponse and _thenUnwrap. */
  original: APIPromiseLike["parseResponse"] | undefined;
  thenUnwrap: APIPromiseLike["_thenUnwrap"] | undefined;
  /** A derived promise (`_thenUnwrap`) will parse the response. */
  unwrapped = false;
  #observed = false;

  // Stream state.
  #text = "";
  #events = 0;
  #usage: unknown;
  #serviceTier: unknown;
  #output: unknown;
  #outputTokens = 0;
  #renewedAt = 0;

  /** `admitted`: the reservation id alone (reserved in full), the admission, or null (not yet). */
  constructor(owner: Guard, admitted: string | NativeAdmission | null, endpoint: Endpoint, request: Body, tags: NativeTags | null, stream: boolean) {
    this.#owner = owner;
    this.#hot = owner.hot;
    this.#slot = owner.slot;
    if (typeof admitted === "string") {
      this.#admission = null;
      this.#id = admitted;
    } else {
      this.#admission = admitted;
      this.#id = admitted?.id ?? undefined;
    }
    this.#endpoint = endpoint;
    this.#request = request;
    this.#tags = tags;
    this.stream = stream;
  }

  /** Server mode: the reservation was decided before dispatch. */
  admitted(admission: NativeAdmission): void {
    this.#admission = admission;
    this.#id = admission.id ?? undefined;
  }

  // --- endings: each finishes the reservation once ---------------------------------------

  #finish(): boolean {
    if (this.#done) return false;
    this.#done = true;
    // Never admitted (refused before dispatch): there is nothing to finish.
    if (this.#id === undefined) return false;
    this.#owner.dirty = true;
    return true;
  }

  settle(result: { usage?: unknown; service_tier?: unknown; output?: unknown } | null | undefined): void {
    if (result?.usage == null) return this.unknown(); // no usage reported: settle at the reservation
    if (!this.#finish()) return;
    const usage = result.usage;
    if (this.#endpoint === Endpoint.ChatCompletions) {
      // No JSON round trip for the common case: the addon reads the values of its fields.
      if (typeof usage !== "object" || Array.isArray(usage)) return this.#hot.finishUnknown(this.#slot, this.#id!);
      const f = chatUsageFields();
      const u = usage as Body;
      this.#hot.finishChatUsage(
        this.#slot,
        this.#id!,
        typeof result.service_tier === "string" ? result.service_tier : null,
        usageValue(u, f[0]!), usageValue(u, f[1]!), usageValue(u, f[2]!), usageValue(u, f[3]!),
        usageValue(u, f[4]!), usageValue(u, f[5]!), usageValue(u, f[6]!), usageValue(u, f[7]!),
      );
      return;
    }
    this.#hot.finishResponse(
      this.#slot,
      this.#id!,
      JSON.stringify({ usage: result.usage, service_tier: result.service_tier, output: webSearchCalls(result.output) }),
    );
  }

  partial(): void {
    if (this.#finish()) this.#hot.finishPartial(this.#slot, this.#id!, this.#text);
  }

  failed(): void {
    if (this.#finish()) this.#hot.finishFailed(this.#slot, this.#id!);
  }

  unknown(): void {
    if (this.#finish()) this.#hot.finishUnknown(this.#slot, this.#id!);
  }

  // --- APIPromise events ---------------------------------------------------------------------

  /** The HTTP response arrived (before anyone parsed it). */
  responded(promise: APIPromiseLike, response: Response): void {
    if (this.#done || this.stream || this.unwrapped || promise.parsedPromise !== undefined) return;
    // Not parsed (yet): the caller took `.asResponse()`, or did not await at all. Read the usage from a copy of the body, leaving theirs unread.
    // Streams are left to parsing; a stream nobody parses settles at its reservation on expiry.
    let copy: Response;
    try {
      copy = response.clone();
    } catch {
      return;
    }
    copy.json().then(
      (value: unknown) => this.settle(value as Body),
      () => this.unknown(),
    );
  }

  /** The request failed without a usable response. */
  rejected(err: unknown): void {
    // An HTTP status means the provider answered with an error before generating, and a request
    // that never left this process (aborted before it was sent, connection refused, no DNS)
    // reached no provider: release. Anything else (timeout, reset, abort in flight) may have
    // been billed: settle at the reservation.
    if (typeof (err as { status?: unknown } | null)?.status === "number" || this.abortedBeforeSend || neverSent(err)) {
      this.failed();
    } else {
      this.unknown();
    }
  }


  /**
   * A parse path produced `value`; returns it unchanged (a Stream is instrumented in place).
   * Several paths may report the same result (a derived promise also runs ours): idempotent.
   */
  parsed<V>(value: V): V {
    if (this.#done || this.#observed) return value;
    if (this.stream) {
      this.#observed = true;
      if (isStream(value)) this.#observe(value);
      else this.unknown();
    } else {
      this.settle(value as Body);
    }
    return value;
  }

  // --- streams -------------------------------------------------------------------------------

  #observe(stream: StreamLike): void {
    const source = stream.iterator;
    let started = false;
    const call = this;
    stream.iterator = function iteratorMetered(this: unknown): AsyncIterator<unknown> {
      const inner = source.call(this);
      // Only the first consumer is the real one: openai throws on a second iteration.
      if (started) return inner;
      started = true;
      call.#renewedAt = Date.now();
      return call.#meterStream(inner, stream);
    };
  }

  /**
   * The metered iterator: a plain object rather than an async generator, so each chunk costs one
   * promise reaction on top of openai's own iterator, not a generator round trip.
   */
  #meterStream(source: AsyncIterator<unknown>, stream: StreamLike): AsyncIterableIterator<unknown> {
    const call = this;
    let cutoff: BudgetCutoffError | undefined;
    const fail = (err: unknown): never => {
      call.#streamEnded(err);
      throw err;
    };
    const step = (r: IteratorResult<unknown>): IteratorResult<unknown> | Promise<IteratorResult<unknown>> => {
      if (r.done === true) {
        call.#streamEnded(NO_ERROR);
        return r;
      }
      if (!call.#take(r.value)) return source.next().then(step, fail); // the hidden usage chunk
      if (call.#overCap()) {
        // Stop the provider now; this chunk is still delivered, the next pull throws.
        stream.controller.abort();
        cutoff = call.#cutoffError();
        call.#streamEnded(cutoff);
      } else {
        call.#renewIfDue();
      }
      return r;
    };
    return {
      next(): Promise<IteratorResult<unknown>> {
        if (cutoff === undefined) return source.next().then(step, fail);
        const err = cutoff;
        const thrower = (): never => {
          throw err;
        };
        return Promise.resolve(source.return?.()).then(thrower, thrower);
      },
      return(value?: unknown): Promise<IteratorResult<unknown>> {
        // The consumer stopped early (`break`, a cancelled ReadableStream): count what was seen.
        call.#streamEnded(NO_ERROR);
        return typeof source.return === "function" ? source.return(value) : Promise.resolve({ done: true, value });
      },
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  }

  #cutoffError(): BudgetCutoffError {
    return new BudgetCutoffError({
      model: String(this.#request.model),
      tags: Object.freeze(this.#tags === null ? {} : this.#tags.entries()),
      maxOutputTokens: this.#admission?.maxOutputTokens ?? 0,
      reservedUsd: this.#admission?.reservedUsd ?? 0,
    });
  }

  #streamEnded(error: unknown): void {
    if (this.#done) return;
    if (error === NO_ERROR) {
      if (this.#usage != null) {
        this.settle({ usage: this.#usage, service_tier: this.#serviceTier, output: this.#output });
      } else {
        this.partial(); // stopped early, aborted, or the server sent no usage: count what was seen
      }
    } else if (this.#events === 0 && isProviderError(error)) {
      this.failed(); // the provider refused before generating anything
    } else {
      this.partial(); // network error or cutoff mid-stream
    }
  }

  /** Records one event; false when it is the usage chunk the caller did not ask for. */
  #take(event: unknown): boolean {
    this.#events++;
    const e = event as Body | null;
    if (e === null || typeof e !== "object") return true;
    if (this.#endpoint === Endpoint.ChatCompletions) {
      if (e.usage != null) {
        this.#usage = e.usage;
        this.#serviceTier = e.service_tier;
      }
      const choices = e.choices as { delta?: Delta }[] | undefined;
      if (!Array.isArray(choices)) return true;
      if (choices.length === 0) return !(this.hideUsageChunk && e.usage != null);
      for (const choice of choices) {
        const d = choice?.delta;
        if (d == null) continue;
        if (typeof d.content === "string") this.#see(d.content);
        if (typeof d.refusal === "string") this.#see(d.refusal);
        if (typeof d.reasoning_content === "string") this.#see(d.reasoning_content);
        if (typeof d.function_call?.arguments === "string") this.#see(d.function_call.arguments);
        if (Array.isArray(d.tool_calls)) {
          for (const t of d.tool_calls) {
            const args = t?.function?.arguments;
            if (typeof args === "string") this.#see(args);
          }
        }
      }
      return true;
    }
    // Responses API events.
    const type = e.type;
    if (typeof type !== "string") return true;
    if (typeof e.delta === "string" && type.endsWith(".delta") && type !== "response.audio.delta") {
      this.#see(e.delta);
    } else if (type === "response.completed" || type === "response.incomplete" || type === "response.failed") {
      const response = e.response as Body | undefined;
      if (response?.usage != null) {
        this.#usage = response.usage;
        this.#serviceTier = response.service_tier;
        this.#output = response.output;
      }
    }
    return true;
  }

  #see(text: string): void {
    if (text.length === 0) return;
    this.#text += text;
    // Counting costs a native call per delta, so only capped (`fit`) streams pay for it.
    if (this.#admission?.capped === true) this.#outputTokens += this.#hot.countTokens(String(this.#request.model), text);
  }

  #overCap(): boolean {
    const max = this.#admission?.maxOutputTokens;
    if (this.#admission?.capped !== true || typeof max !== "number") return false;
    const n = typeof this.#request.n === "number" && this.#request.n > 1 ? this.#request.n : 1;
    return this.#outputTokens >= max * n;
  }

  #renewIfDue(): void {
    const now = Date.now();
    if (now - this.#renewedAt < this.#owner.keepAliveMs) return;
    this.#renewedAt = now;
    if (this.#id === undefined) return;
    try {
      this.#hot.keepAlive(this.#slot, this.#id);
    } catch {
      // Renewal is best effort: an expired reservation is settled at its reserved amount.
    }
  }
}

interface Delta {
  content?: unknown;
  refusal?: unknown;
  reasoning_content?: unknown;
  function_call?: { arguments?: unknown };
  tool_calls?: { function?: { arguments?: unknown } }[];
}

const NO_ERROR = Symbol("no error");

function isStream(value: unknown): value is StreamLike {
  const s = value as Partial<StreamLike> | null;
  return typeof s === "object" && s !== null && typeof s.iterator === "function" && s.controller instanceof AbortController;
}

/** An error the provider sent (HTTP status, or an `error` event in the stream). */
function isProviderError(err: unknown): boolean {
  const e = err as { status?: unknown; error?: unknown } | null;
  return typeof e === "object" && e !== null && (typeof e.status === "number" || e.error != null);
}

/** The value at `path` below `usage`; `undefined` below a parent that is not an object. */
function usageValue(usage: Body, path: readonly string[]): unknown {
  let v: unknown = usage[path[0]!];
  for (let i = 1; i < path.length; i++) v = v !== null && typeof v === "object" ? (v as Body)[path[i]!] : undefined;
  return v;
}

/** Only `web_search_call` items of a Responses output are billed per call; send only those. */
function webSearchCalls(output: unknown): unknown[] | undefined {
  if (!Array.isArray(output)) return undefined;
  let found: unknown[] | undefined;
  for (const item of output) {
    if ((item as Body | null)?.type === "web_search_call") (found ??= []).push(item);
  }
  return found;
}

/** Network errors that mean the request never reached a server. */
const NEVER_SENT = new Set(["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "EHOSTUNREACH", "ENETUNREACH"]);

/** Whether `err` (openai's APIConnectionError wraps fetch's TypeError, which wraps the socket
 * error) says the connection was never made. */
function neverSent(err: unknown): boolean {
  let cause: unknown = err;
  for (let depth = 0; depth < 4 && cause !== null && typeof cause === "object"; depth++) {
    const code = (cause as { code?: unknown }).code;
    if (typeof code === "string" && NEVER_SENT.has(code)) return true;
    cause = (cause as { cause?: unknown }).cause;
  }
  return false;
}
