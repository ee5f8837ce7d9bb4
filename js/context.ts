// Tag scopes (SPEC §1): `withTags()` runs a function in an AsyncLocalStorage scope, the way
// OpenTelemetry's AsyncLocalStorageContextManager does: scopes are immutable (a child copies its
// parent), and the storage lives on globalThis under a Symbol.for key, so the ESM and CJS builds
// (or two installed copies of the package) see the same scopes.
//
// Each scope holds its tags already validated and prepared as one NativeTags handle, so a call
// passes a handle to the guard instead of serialising an object. Client default tags come first
// and scopes win over them; the merged handle for a (defaults, scope) pair is cached on the scope
// in a WeakMap keyed by the defaults object, so it is built once per scope and client.

import { AsyncLocalStorage } from "node:async_hooks";
import type * as Api from "../index.js";
import { nativeCode, messageOf } from "./errors.js";
import { native, type NativeTags } from "./internal/native.js";

type Tags = Api.Tags;

/** One `withTags()` scope. Shared by every copy of the package: keep this shape stable. */
interface Scope {
  /** All tags of this scope and its parents, merged; frozen. */
  readonly tags: Readonly<Tags>;
  /** `tags` prepared by the addon (may belong to another copy's addon, see `ownHandle`). */
  readonly handle: NativeTags;
  /** Handles of `tags` laid over a client's defaults, keyed by that `TagDefaults` object. */
  readonly merged: WeakMap<object, NativeTags>;
}

/** Default tags of a guard or a wrapped client, prepared once. */
export interface TagDefaults {
  readonly tags: Readonly<Tags>;
  readonly handle: NativeTags;
}

const STORAGE_KEY = Symbol.for("bursora.sdk.context");
const store = globalThis as { [STORAGE_KEY]?: AsyncLocalStorage<Scope> };
const storage: AsyncLocalStorage<Scope> = (store[STORAGE_KEY] ??= new AsyncLocalStorage<Scope>());

const NO_TAGS: Readonly<Tags> = Object.freeze({});

/**
 * Validates `tags` and lays them over `parent` (inner wins), as one native handle.
 * Throws TypeError for anything SPEC §1 forbids; `where` names the API that received them.
 */
export function prepareTags(parent: NativeTags | null, tags: unknown, where: string): NativeTags {
  if (tags === null || typeof tags !== "object" || Array.isArray(tags)) {
    throw new TypeError(`${where}: tags must be an object of string values, e.g. { tenant_id: "acme" }`);
  }
  // JSON.stringify would silently drop `undefined` values, and a tag that quietly disappears
  // is a call that escapes its budget (`{ tenant_id: user?.tenant }`): refuse it here.
  for (const key in tags) {
    const value = (tags as Record<string, unknown>)[key];
    if (typeof value !== "string") {
      throw new TypeError(
        `${where}: tag ${JSON.stringify(key)} must be a string, got ${value === null ? "null" : typeof value}`,
      );
    }
  }
  try {
    return native().NativeTags.create(parent, JSON.stringify(tags));
  } catch (err) {
    if (nativeCode(err) === "invalid_input") throw new TypeError(`${where}: ${messageOf(err)}`);
    throw err;
  }
}

/** Prepares client/guard default tags, laid over `parent` defaults if any. */
export function makeDefaults(parent: TagDefaults | null, tags: unknown, where: string): TagDefaults {
  const handle = prepareTags(parent?.handle ?? null, tags, where);
  return Object.freeze({ tags: Object.freeze({ ...parent?.tags, ...(tags as Tags) }), handle });
}

export function withTags<R>(tags: Tags, fn: () => R): R {
  if (typeof fn !== "function") throw new TypeError("withTags(tags, fn): fn must be a function");
  const parent = storage.getStore();
  const handle = prepareTags(parent ? ownHandle(parent) : null, tags, "withTags()");
  const scope: Scope = Object.freeze({
    tags: Object.freeze(parent ? { ...parent.tags, ...tags } : { ...tags }),
    handle,
    merged: new WeakMap<object, NativeTags>(),
  });
  return storage.run(scope, fn);
}

export function currentTags(): Readonly<Tags> {
  return storage.getStore()?.tags ?? NO_TAGS;
}

/**
 * The tags handle for a call made now by a client with `defaults`: the hot path, so it returns
 * cached handles and allocates only the first time a scope meets a client.
 */
export function callTags(defaults: TagDefaults | null): NativeTags | null {
  const scope = storage.getStore();
  if (scope === undefined) return defaults === null ? null : defaults.handle;
  if (defaults === null) return ownHandle(scope);
  let handle = scope.merged.get(defaults);
  if (handle === undefined) {
    // Merging can only fail here when defaults + scope together exceed the tag count limit.
    handle = prepareTags(defaults.handle, scope.tags, "withTags() inside a wrapped client's default tags");
    scope.merged.set(defaults, handle);
  }
  return handle;
}

/**
 * The scope's handle if it was made by this copy's addon; a scope opened by another installed
 * copy of the package carries a handle of another addon instance, which ours cannot read, so it
 * is rebuilt from the plain tags (once, then cached like any merge).
 */
function ownHandle(scope: Scope): NativeTags {
  const { NativeTags } = native();
  if (scope.handle instanceof NativeTags) return scope.handle;
  let handle = scope.merged.get(NativeTags);
  if (handle === undefined) {
    handle = prepareTags(null, scope.tags, "withTags()");
    scope.merged.set(NativeTags, handle);
  }
  return handle;
}
