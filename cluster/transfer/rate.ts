/**
 * A token-bucket rate limiter for transfer bytes (`--transfer-rate-limit`), and a semaphore that
 * bounds concurrent transfer streams so activation traffic is never starved.
 *
 * @example
 * ```ts
 * const limit = new RateLimiter(10e6); // 10 MB/s
 * await limit.take(1 << 20);           // waits as long as 1 MiB takes at that rate
 * ```
 *
 * @module
 */

/** Paces byte counts to a rate; 0 (or less) means unlimited. */
export class RateLimiter {
  #at = 0;
  /** @param bytesPerSecond the rate; 0 = unlimited @param burstMs credit kept for idle time */
  constructor(public bytesPerSecond: number, private readonly burstMs = 100) {}

  /** Wait until `bytes` more fit within the rate. */
  async take(bytes: number, signal?: AbortSignal): Promise<void> {
    if (!(this.bytesPerSecond > 0)) return;
    const now = performance.now();
    this.#at = Math.max(this.#at, now - this.burstMs) + (bytes / this.bytesPerSecond) * 1000;
    const wait = this.#at - now;
    if (wait > 1) await sleep(wait, signal);
  }
}

/** At most `n` holders at a time; the rest wait in order. */
export class Semaphore {
  #free: number;
  readonly #waiting: (() => void)[] = [];
  /** @param n permits */
  constructor(n: number) {
    this.#free = n;
  }

  /**
   * Take a permit; the returned function gives it back. With `signal`, a wait that is aborted
   * leaves the line (rejecting with its reason): a gone caller holds no place in it.
   */
  async acquire(signal?: AbortSignal): Promise<() => void> {
    signal?.throwIfAborted();
    if (this.#free > 0) this.#free--;
    else {
      await new Promise<void>((resolve, reject) => {
        const grant = () => {
          signal?.removeEventListener("abort", leave);
          resolve();
        };
        const leave = () => {
          const at = this.#waiting.indexOf(grant);
          if (at >= 0) this.#waiting.splice(at, 1);
          reject(signal!.reason);
        };
        signal?.addEventListener("abort", leave, { once: true });
        this.#waiting.push(grant);
      });
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.#waiting.shift();
      if (next) next();
      else this.#free++;
    };
  }
}

/** Sleep `ms`, ending early (without error) when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done);
  });
}
