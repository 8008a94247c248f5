/**
 * Admission control for a head: at most `maxActive` generations run at once (each holds a KV
 * cache slot on every stage of its chain), at most `maxQueued` more wait in arrival order; the
 * next request is refused at once with {@linkcode QueueFullError} (HTTP 429 / RESOURCE_EXHAUSTED),
 * so overload shows up as fast errors instead of ever-growing latency.
 *
 * @module
 */
import { QueueFullError } from "./errors.ts";

/** Counts for /health and metrics. */
export interface AdmissionStats {
  /** Generations running now. */
  active: number;
  /** Requests waiting for a slot. */
  queued: number;
  /** Most generations at once. */
  maxActive: number;
  /** Most waiting requests. */
  maxQueued: number;
}

/**
 * A bounded pool of generation slots with a bounded FIFO queue.
 *
 * @example
 * ```ts
 * const admission = new Admission(64, 256);
 * const release = await admission.acquire(signal); // throws QueueFullError when full
 * try { await generate(); } finally { release(); }
 * ```
 */
export class Admission {
  private active = 0;
  private readonly waiting: { grant: () => void; fail: (e: unknown) => void }[] = [];

  /** A pool of `maxActive` slots and a queue of `maxQueued` places. */
  constructor(readonly maxActive: number, readonly maxQueued: number) {
    if (!(maxActive >= 1)) throw new RangeError("maxActive must be at least 1");
    if (!(maxQueued >= 0)) throw new RangeError("maxQueued must be 0 or more");
  }

  /** Current counts. */
  get stats(): AdmissionStats {
    return {
      active: this.active,
      queued: this.waiting.length,
      maxActive: this.maxActive,
      maxQueued: this.maxQueued,
    };
  }

  /**
   * Take a slot, waiting in line when all are busy; resolves to the function that gives it back
   * (idempotent). Rejects with QueueFullError when the line is full, or with the signal's reason
   * when it aborts while waiting. `onAccepted` is called at once when it got a slot or a place in
   * line (not refused), so a caller can answer before the slot is its.
   */
  acquire(signal?: AbortSignal, onAccepted?: () => void): Promise<() => void> {
    signal?.throwIfAborted();
    if (this.active < this.maxActive && this.waiting.length === 0) {
      this.active++;
      onAccepted?.();
      return Promise.resolve(this.releaser());
    }
    if (this.waiting.length >= this.maxQueued) {
      return Promise.reject(
        new QueueFullError(
          `all ${this.maxActive} generation slots are busy and ${this.waiting.length} requests ` +
            `wait already; retry later, or raise --max-requests / --queue-size`,
        ),
      );
    }
    return new Promise((resolve, reject) => {
      const entry = {
        grant: () => {
          signal?.removeEventListener("abort", onAbort);
          resolve(this.releaser());
        },
        fail: reject,
      };
      const onAbort = () => {
        const i = this.waiting.indexOf(entry);
        if (i >= 0) this.waiting.splice(i, 1);
        reject(signal!.reason);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.waiting.push(entry);
      onAccepted?.();
    });
  }

  /** Fail every request still waiting in line with `error` (shutdown: ask another agent). */
  failWaiting(error: unknown): void {
    for (const entry of this.waiting.splice(0)) entry.fail(error);
  }

  /** A one-shot release that hands the slot to the next in line. */
  private releaser(): () => void {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const next = this.waiting.shift();
      // The slot passes straight to the next in line: `active` stays the same.
      if (next) next.grant();
      else this.active--;
    };
  }
}
