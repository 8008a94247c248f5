/**
 * The Lifeguard suspicion timer. A suspected member is declared dead when its timer fires.
 * The timer starts at `max` and shrinks toward `min` as *independent* members confirm the
 * suspicion, on a log scale: the first confirmations matter most. A node that is merely slow
 * gets time to refute; a node that many peers cannot reach is declared dead quickly.
 *
 * @module
 */
import type { Clock, TimerHandle } from "./clock.ts";

/**
 * Minimum suspicion timeout: `mult × max(1, log10 n) × probeInterval`. Grows with cluster size
 * because news takes about log(n) gossip rounds to reach the accused, who needs it to refute.
 *
 * @example
 * ```ts
 * suspicionTimeout(4, 100, 1000); // 8000 ms
 * ```
 */
export function suspicionTimeout(mult: number, n: number, probeIntervalMs: number): number {
  const scale = Math.max(1, Math.log10(Math.max(1, n)));
  return mult * scale * probeIntervalMs;
}

/**
 * Total timeout after `confirmations` out of `k` expected:
 * `max − (max − min) × log(c+1)/log(k+1)`, never below `min`.
 */
export function suspicionTotal(
  confirmations: number,
  k: number,
  minMs: number,
  maxMs: number,
): number {
  if (k < 1) return minMs;
  const frac = Math.log(confirmations + 1) / Math.log(k + 1);
  return Math.max(minMs, Math.floor(maxMs - frac * (maxMs - minMs)));
}

/** One member's suspicion: a timer plus the set of distinct confirmers. */
export class Suspicion {
  private readonly confirmers = new Set<string>();
  private readonly start: number;
  private timer: TimerHandle | null = null;
  private fired = false;

  /**
   * @param from the first accuser (not counted as a confirmation)
   * @param k confirmations expected before the timeout reaches `min`
   * @param minMs lower bound of the timeout
   * @param maxMs starting timeout
   * @param clock time source
   * @param onTimeout called once when the timer fires, with the number of confirmations
   */
  constructor(
    from: string,
    private readonly k: number,
    private readonly minMs: number,
    private readonly maxMs: number,
    private readonly clock: Clock,
    private readonly onTimeout: (confirmations: number) => void,
  ) {
    this.confirmers.add(from);
    this.start = clock.now();
    this.arm(k < 1 ? minMs : maxMs);
  }

  private arm(ms: number) {
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = this.clock.setTimeout(() => {
      this.fired = true;
      this.onTimeout(this.confirmations);
    }, Math.max(0, ms));
  }

  /** Distinct confirmations beyond the first accuser. */
  get confirmations(): number {
    return this.confirmers.size - 1;
  }

  /** Milliseconds from the start until the timer fires, given the current confirmations. */
  get totalMs(): number {
    return suspicionTotal(this.confirmations, this.k, this.minMs, this.maxMs);
  }

  /**
   * Count a confirmation from `from`; returns true when it was new (and so worth re-gossiping).
   * Shrinks the remaining time accordingly.
   */
  confirm(from: string): boolean {
    if (this.fired || this.confirmations >= this.k || this.confirmers.has(from)) return false;
    this.confirmers.add(from);
    const elapsed = this.clock.now() - this.start;
    this.arm(this.totalMs - elapsed);
    return true;
  }

  /** Stop the timer (refuted, or the member died another way). */
  stop(): void {
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = null;
  }
}
