/**
 * Which sessions a stage admits, by count and by KV bytes. A session's KV cache is allocated
 * whole when it opens, sized by its own context (the prompt plus max_tokens, at most the
 * agent's --context-size), so its bytes are known then and an admitted session never grows:
 * checking at open is enough to keep the caches within the stage's limit. A refused session is
 * "exhausted", the stage-full path heads already take (wait for room, try another replica, or
 * answer 429).
 *
 * @example
 * ```ts
 * import { sessionsThatFit } from "./kv_admission.ts";
 * sessionsThatFit(6e6, 1e6, 924_160); // 5 more sessions of 924 160 bytes fit
 * ```
 * @module
 */
import { BackendMemoryError, type KVType } from "../../kernels/backend.ts";
import type { LlamaStage, Session } from "../../model/llama.ts";
import { StageSessionError } from "./stage_frame.ts";

/**
 * Why a stage refused a session: it held --max-sessions already (`sessions`), its KV caches
 * would pass its byte limit (`kv_bytes`), or the backend had no memory left (`memory`).
 */
export type RefusalReason = "sessions" | "kv_bytes" | "memory";

/** How many more sessions of `sessionBytes` fit beside `heldBytes` within `limitBytes`. */
export function sessionsThatFit(limitBytes: number, heldBytes: number, sessionBytes: number) {
  if (!(sessionBytes > 0)) return limitBytes >= heldBytes ? Infinity : 0;
  return Math.max(0, Math.floor((limitBytes - heldBytes) / sessionBytes));
}

/** Counts a stage's refusals and allocates the KV caches of the sessions it admits. */
export class KvAdmission {
  /** Sessions refused since the stage loaded, by reason (metrics, logs). */
  readonly refusals: Record<RefusalReason, number> = { sessions: 0, kv_bytes: 0, memory: 0 };

  constructor(
    private readonly stage: LlamaStage,
    private readonly kvType: KVType,
    /** Most bytes the sessions' KV caches may hold together; Infinity: no bound. */
    readonly limitBytes: number,
  ) {}

  /** The refusal of a stage that holds `maxSessions` sessions already. */
  full(maxSessions: number): StageSessionError {
    this.refusals.sessions++;
    return new StageSessionError(
      `stage ${this.#name} holds ${maxSessions} sessions already (--max-sessions); retry later`,
      "exhausted",
    );
  }

  /**
   * A KV cache for a new session of `nCtx` positions beside caches of `heldBytes`, or
   * "exhausted" when it would pass the limit. When the backend's memory is full (on WASM, KV
   * caches, prefix blocks and activations share one memory), prefix blocks are given back until
   * it fits; with none left it is "exhausted" too. Before, a plain error failed the request
   * while the prefix cache kept memory it could give.
   */
  allocate(nCtx: number, heldBytes: number): Session {
    const need = this.stage.kvBytes(nCtx, this.kvType);
    if (heldBytes + need > this.limitBytes) {
      this.refusals.kv_bytes++;
      throw new StageSessionError(this.#overLimit(nCtx, need, heldBytes), "exhausted");
    }
    for (;;) {
      try {
        return this.stage.newSession(nCtx, this.kvType);
      } catch (e) {
        if (!(e instanceof BackendMemoryError)) throw e;
        if (this.stage.prefixCache?.shrink()) continue;
        this.refusals.memory++;
        throw new StageSessionError(
          `stage ${this.#name} has no memory for another session's KV cache (${nCtx} ` +
            `positions): ${e.message}`,
          "exhausted",
        );
      }
    }
  }

  get #name(): string {
    return `[${this.stage.from}, ${this.stage.to})`;
  }

  /** Why a session of `need` bytes does not fit: retry later, or never at this context. */
  #overLimit(nCtx: number, need: number, held: number): string {
    const limit = Math.round(this.limitBytes);
    const head = `stage ${this.#name} has no KV room for a session of ${nCtx} positions ` +
      `(${need} bytes): `;
    if (need <= limit) {
      return head + `the sessions open hold ${held} of the ${limit} bytes its memory budget ` +
        `leaves for KV caches; retry later`;
    }
    const most = Math.floor(nCtx * limit / need);
    return head + `its memory budget leaves ${limit} bytes for KV caches, room for at most ` +
      `${most} positions; ask for fewer tokens (max_tokens) or raise --memory-budget`;
  }
}
