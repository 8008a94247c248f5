/**
 * Broadcasts: membership news (and user data) piggybacked on probes and sent on gossip ticks.
 * Each carries an invalidation key — the member id it is about — so that newer news about a
 * member replaces older news still in the queue.
 *
 * @module
 */

/** One queued broadcast. */
export interface Broadcast {
  /** What this is about; a newer broadcast with the same key invalidates this one. */
  readonly key: string | null;
  /** The encoded message. */
  readonly msg: Uint8Array;
  /** Called once when retransmitted enough times, or invalidated. */
  finished?(): void;
}

/**
 * How many times each broadcast is sent: `mult × ceil(log10(n + 1))`, enough for an epidemic
 * to reach every member with high probability.
 *
 * @example
 * ```ts
 * retransmitLimit(4, 100); // 12
 * ```
 */
export function retransmitLimit(mult: number, n: number): number {
  return mult * Math.ceil(Math.log10(n + 1));
}
