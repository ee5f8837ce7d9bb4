// The error hierarchy of SPEC §5. Every class is checked against its declaration in index.d.ts
// at the bottom of this file, so the public contract and the implementation cannot drift apart.

import type * as Api from "../index.js";

type Tags = Api.Tags;

class BursoraErrorClass extends Error {
  readonly code: Api.BursoraErrorCode;

  constructor(code: Api.BursoraErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

class BudgetExceededErrorClass extends BursoraErrorClass {
  declare readonly code: "budget_exceeded";
  readonly budget: Api.RefusingBudget;
  readonly tags: Tags;
  readonly model: string;
  readonly estimatedUsd: number;

  constructor(init: {
    message: string;
    budget: Api.RefusingBudget;
    tags: Tags;
    model: string;
    estimatedUsd: number;
  }) {
    super("budget_exceeded", init.message);
    this.budget = init.budget;
    this.tags = init.tags;
    this.model = init.model;
    this.estimatedUsd = init.estimatedUsd;
  }
}

class BudgetCutoffErrorClass extends BursoraErrorClass {
  declare readonly code: "budget_cutoff";
  readonly model: string;
  readonly tags: Tags;
  readonly maxOutputTokens: number;
  readonly reservedUsd: number;

  constructor(init: { model: string; tags: Tags; maxOutputTokens: number; reservedUsd: number }) {
    super(
      "budget_cutoff",
      `The ${init.model} stream was cut off after ${init.maxOutputTokens} output tokens: that is ` +
        `what the budget could still pay for (policy "fit", $${init.reservedUsd} reserved). The ` +
        `chunks received so far are complete and were settled. Raise the budget or wait for its ` +
        `window to reset to get longer answers.`,
    );
    this.model = init.model;
    this.tags = init.tags;
    this.maxOutputTokens = init.maxOutputTokens;
    this.reservedUsd = init.reservedUsd;
  }
}

class BudgetUnavailableErrorClass extends BursoraErrorClass {
  declare readonly code: "budget_unavailable";

  constructor(message: string, options?: { cause?: unknown }) {
    super("budget_unavailable", message, options);
  }
}

class UnknownModelErrorClass extends BursoraErrorClass {
  declare readonly code: "unknown_model";
  readonly model: string;

  constructor(message: string, model: string) {
    super("unknown_model", message);
    this.model = model;
  }
}

class BursoraConfigErrorClass extends BursoraErrorClass {
  declare readonly code: "config";

  constructor(message: string, options?: { cause?: unknown }) {
    super("config", message, options);
  }
}

// Public names on the classes and their prototypes (not per instance): stack traces and
// `util.inspect` show them, and they survive minification of the bundle.
const local = {
  BursoraError: BursoraErrorClass,
  BudgetExceededError: BudgetExceededErrorClass,
  BudgetCutoffError: BudgetCutoffErrorClass,
  BudgetUnavailableError: BudgetUnavailableErrorClass,
  UnknownModelError: UnknownModelErrorClass,
  BursoraConfigError: BursoraConfigErrorClass,
};
for (const [name, cls] of Object.entries(local)) {
  Object.defineProperty(cls, "name", { value: name, configurable: true });
  Object.defineProperty(cls.prototype, "name", { value: name, writable: true, configurable: true });
}

// One set of classes per process, whichever copy of the package (ESM build, CJS build, another
// install) loaded first, so `err instanceof BudgetExceededError` holds whichever copy threw it.
// The key carries a version: a copy with a different error shape registers its own set.
const REGISTRY = Symbol.for("bursora.sdk.errors.v1");
const registry = globalThis as { [REGISTRY]?: typeof local };
const shared = (registry[REGISTRY] ??= local);

export const BursoraError = shared.BursoraError;
export type BursoraError = BursoraErrorClass;
export const BudgetExceededError = shared.BudgetExceededError;
export type BudgetExceededError = BudgetExceededErrorClass;
export const BudgetCutoffError = shared.BudgetCutoffError;
export type BudgetCutoffError = BudgetCutoffErrorClass;
export const BudgetUnavailableError = shared.BudgetUnavailableError;
export type BudgetUnavailableError = BudgetUnavailableErrorClass;
export const UnknownModelError = shared.UnknownModelError;
export type UnknownModelError = UnknownModelErrorClass;
export const BursoraConfigError = shared.BursoraConfigError;
export type BursoraConfigError = BursoraConfigErrorClass;

/** The `code` a native (N-API) error carries, if any. */
export function nativeCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}

/** The message of anything thrown. */
export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

// Compile-time conformance with the public declarations (types only; nothing is emitted).
type Conforms<Impl extends Decl, Decl> = Impl;
export type ErrorClassesConform = [
  Conforms<typeof BursoraError, typeof Api.BursoraError>,
  Conforms<typeof BudgetExceededError, typeof Api.BudgetExceededError>,
  Conforms<typeof BudgetCutoffError, typeof Api.BudgetCutoffError>,
  Conforms<typeof BudgetUnavailableError, typeof Api.BudgetUnavailableError>,
  Conforms<typeof UnknownModelError, typeof Api.UnknownModelError>,
  Conforms<typeof BursoraConfigError, typeof Api.BursoraConfigError>,
];
