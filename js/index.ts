// Public entry point of @bursora/sdk. The declarations users read are in ../index.d.ts; every
// export here is annotated with its declared type, so `npm run typecheck` fails if the
// implementation drifts from the contract.

import type * as Api from "../index.js";
import { currentTags as currentTagsImpl, withTags as withTagsImpl } from "./context.js";
import { Guard } from "./guard.js";
import { isOpenAIClient, unsupportedClient, wrapOpenAI } from "./openai.js";

export {
  BudgetCutoffError,
  BudgetExceededError,
  BudgetUnavailableError,
  BursoraConfigError,
  BursoraError,
  UnknownModelError,
} from "./errors.js";

/** The Guard behind each facade this copy of the package made. */
const guards = new WeakMap<Api.Bursora, Guard>();

function facade(guard: Guard): Api.Bursora {
  const bursora: Api.Bursora = Object.freeze({
    wrap<T>(client: T, options?: { tags?: Api.Tags }): T {
      if (!isOpenAIClient(client)) throw unsupportedClient(client);
      return wrapOpenAI(client, guard, options?.tags);
    },
    spend: () => guard.spend(),
    flush: () => guard.flush(),
    shutdown: () => guard.shutdown(),
  });
  guards.set(bursora, guard);
  return bursora;
}

function isBursora(value: unknown): value is Api.Bursora {
  const b = value as Partial<Api.Bursora> | null;
  return typeof b === "object" && b !== null && typeof b.wrap === "function" && typeof b.spend === "function";
}

export const createBursora: typeof Api.createBursora = (options) => facade(new Guard(options));

// The default guard is shared by every copy of the package in the process (ESM and CJS builds),
// so `wrap(client)` from either meters against one ledger.
const DEFAULT_KEY = Symbol.for("bursora.sdk.defaultGuard");
const defaultStore = globalThis as { [DEFAULT_KEY]?: Api.Bursora };

export const getDefaultBursora: typeof Api.getDefaultBursora = () =>
  (defaultStore[DEFAULT_KEY] ??= createBursora());

export const wrap: typeof Api.wrap = <T>(client: T, options?: Api.BursoraOptions | Api.Bursora): T => {
  // Check the client first: an unsupported client must not leave a guard (or a db handle) behind.
  if (!isOpenAIClient(client)) throw unsupportedClient(client);
  if (options === undefined) return getDefaultBursora().wrap(client);
  if (isBursora(options)) {
    const guard = guards.get(options);
    // A Bursora made by another copy of the package wraps with its own code.
    return guard === undefined ? options.wrap(client) : wrapOpenAI(client, guard, undefined);
  }
  return wrapOpenAI(client, new Guard(options), undefined);
};

export const withTags: typeof Api.withTags = withTagsImpl;

export const currentTags: typeof Api.currentTags = currentTagsImpl;
