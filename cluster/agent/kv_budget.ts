/**
 * One rule for an agent's KV cache bytes, which placement plans with and a stage admits by:
 * `--memory-budget`, less `--prefix-cache` (its blocks come out of the same budget), holds the
 * stage's weights and its open sessions' KV caches.
 *
 * - Placement reserves KV for {@linkcode reservedSessions} full-context sessions on every stage,
 *   at least 1: a plan never gives a stage less room than one session at full context needs.
 * - A stage admits sessions while their caches fit in {@linkcode stageKvLimit} (what the budget
 *   leaves after its weights), whatever `--max-sessions` allows: before, 40 sessions of 1800
 *   positions held 37 MB of KV against a 7 MB budget. More sessions than the reservation fit
 *   when they are shorter than the full context (each cache is sized by its own request).
 *
 * @example
 * ```ts
 * import { stageKvLimit } from "./kv_budget.ts";
 * stageKvLimit({ memoryBudget: 7e6, prefixCache: 0 }, 494_592); // 6 505 408 bytes for KV
 * ```
 * @module
 */
import { kvCacheBytes, type LlamaConfig } from "../../model/config.ts";
import { sessionsThatFit } from "../pipeline/kv_admission.ts";

/**
 * Most full-context sessions placement reserves KV for. Reserving for every --max-sessions
 * session (64 by default) would make most budgets hold a handful of layers; admission lets in
 * as many as the bytes left hold.
 */
export const RESERVED_SESSIONS_CAP = 4;

/** Full-context sessions a plan reserves KV for on each stage: 1 to RESERVED_SESSIONS_CAP. */
export function reservedSessions(maxSessions: number): number {
  return Math.max(1, Math.min(maxSessions, RESERVED_SESSIONS_CAP));
}

/** Bytes one session of `nCtx` positions holds per layer, f32 as an agent's stages keep them. */
export function kvBytesPerLayer(config: LlamaConfig, nCtx: number): number {
  return kvCacheBytes(config, 1, nCtx);
}

/** The budget flags the rule reads. */
export interface KvBudgetFlags {
  /** --memory-budget, bytes. */
  memoryBudget: number;
  /** --prefix-cache, bytes taken out of the budget. */
  prefixCache: number;
}

/** Bytes an agent offers placement for weights and KV caches: its budget less the prefix cache. */
export function offeredBudget(flags: KvBudgetFlags): number {
  return flags.memoryBudget - flags.prefixCache;
}

/** Bytes a stage whose weights take `weightBytes` may spend on its sessions' KV caches. */
export function stageKvLimit(flags: KvBudgetFlags, weightBytes: number): number {
  return Math.max(0, offeredBudget(flags) - weightBytes);
}

/** What the start-up check needs to know about a loaded stage. */
export interface KvBudgetCheck {
  /** stageKvLimit for the stage. */
  limitBytes: number;
  /** KV bytes of one session at the full context (the stage's kvBytes of `context`). */
  sessionBytes: number;
  /** --max-sessions. */
  maxSessions: number;
  /** The full context: min(--context-size, the model's). */
  context: number;
}

/**
 * The warning to log when `--max-sessions` sessions at the full context cannot fit in what the
 * budget leaves for KV (undefined when they fit): how many fit, and which flag to change. Not an
 * error: shorter requests take smaller caches and more of them fit.
 */
export function kvBudgetWarning(c: KvBudgetCheck): string | undefined {
  const fit = sessionsThatFit(c.limitBytes, 0, c.sessionBytes);
  if (fit >= c.maxSessions) return undefined;
  const limit = Math.round(c.limitBytes);
  if (fit === 0) {
    return `the memory budget leaves ${limit} bytes for KV caches, less than one session at ` +
      `the full ${c.context}-token context takes (${c.sessionBytes} bytes): requests that ` +
      `need the whole context are refused as busy; raise --memory-budget or lower --context-size`;
  }
  return `the memory budget leaves ${limit} bytes for KV caches: ${fit} of --max-sessions ` +
    `${c.maxSessions} sessions fit at the full ${c.context}-token context (${c.sessionBytes} ` +
    `bytes each); more are refused as busy until others end (shorter requests take less). ` +
    `Raise --memory-budget, or lower --max-sessions to ${fit} or --context-size`;
}
