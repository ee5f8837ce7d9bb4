// The error hierarchy of SPEC §5. Every class is checked against its declaration in index.d.ts
// at the bottom of this file, so the public contract and the implementation cannot drift apart.

import type * as Api from "../index.js";

type Tags = Api.Tags;

export class BursoraError extends Error {
  readonly code: Api.BursoraErrorCode;

  constructor(code: Api.BursoraErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

export class BudgetExceededError extends BursoraError {
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

export class BudgetCutoffError extends BursoraError {
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

export class BudgetUnavailableError extends BursoraError {
  declare readonly code: "budget_unavailable";

  constructor(message: string, options?: { cause?: unknown }) {
    super("budget_unavailable", message, options);
  }
}

export class UnknownModelError extends BursoraError {
  declare readonly code: "unknown_model";
  readonly model: string;

  constructor(message: string, model: string) {
    super("unknown_model", message);
    this.model = model;
  }
}

export class BursoraConfigError extends BursoraError {
  declare readonly code: "config";

  constructor(message: string, options?: { cause?: unknown }) {
    super("config", message, options);
  }
}

// `name` on the prototype (not per instance): stack traces and `util.inspect` show the class,
// and it survives minification of the bundle.
for (const [cls, name] of [
  [BursoraError, "BursoraError"],
  [BudgetExceededError, "BudgetExceededError"],
  [BudgetCutoffError, "BudgetCutoffError"],
  [BudgetUnavailableError, "BudgetUnavailableError"],
  [UnknownModelError, "UnknownModelError"],
  [BursoraConfigError, "BursoraConfigError"],
] as const) {
  Object.defineProperty(cls.prototype, "name", { value: name, writable: true, configurable: true });
}

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
