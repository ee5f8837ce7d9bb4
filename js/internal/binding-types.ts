// TEMPORARY: the binding contract until the generated binding.d.ts lands.
export declare class NativeGuard {
  constructor(optionsJson: string);
  admit(endpointCode: number, bodyJson: string, tags?: NativeTags | null, provider?: string | null, baseUrl?: string | null): NativeAdmission;
  finishResponse(id: string, responseJson: string): void;
  finishPartial(id: string, outputText: string): void;
  finishFailed(id: string): void;
  finishUnknown(id: string): void;
  keepAlive(id: string): boolean;
  spend(): Array<NativeBudgetStatus>;
  flush(): Promise<void>;
  shutdown(): Promise<void>;
  takeWarnings(): Array<NativeWarning>;
}
export declare class NativeTags {
  static create(parent: NativeTags | undefined | null, tagsJson: string): NativeTags;
  entries(): Record<string, string>;
}
export declare function countTokens(model: string, text: string): number;
export declare function coreVersion(): string;
export interface NativeAdmission { ok: boolean; id?: string; reservedUsd?: number; estimatedUsd?: number; capped?: boolean; maxOutputTokens?: number; inputTokens?: number; refusal?: NativeRefusal; warnings?: Array<NativeWarning> }
export interface NativeRefusedBudget { id: string; name: string; key?: string; window: string; limitUsd: number; spentUsd: number; reservedUsd: number; resetsAt?: string }
export interface NativeRefusal { code: string; message: string; model: string; estimatedUsd?: number; budget?: NativeRefusedBudget }
export interface NativeBudgetStatus { id: string; name: string; window: string; mode: string; match: Record<string, string>; key?: string; limitUsd: number; spentUsd: number; reservedUsd: number; overrunUsd: number; spentNanos: number; reservedNanos: number; resetsAt?: string }
export interface NativeWarning { code: string; message: string }
