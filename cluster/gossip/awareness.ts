/**
 * Lifeguard local health awareness. A node that misses acks it should have got, or has to refute
 * suspicions about itself, is probably the slow one (CPU starved, GC pause, saturated link). It
 * then stretches its own probe interval and timeout so it does not accuse healthy peers.
 *
 * @module
 */

/** A health score in [0, max); 0 is healthy. Timeouts are multiplied by `score + 1`. */
export class Awareness {
  private score = 0;

  /** @param max the score stays below this (memberlist's AwarenessMaxMultiplier) */
  constructor(private readonly max: number) {}

  /** Add `delta` (negative on success), clamped to [0, max − 1]. */
  applyDelta(delta: number): void {
    this.score = Math.min(Math.max(0, this.score + delta), Math.max(0, this.max - 1));
  }

  /** The current score (0 = healthy). */
  get healthScore(): number {
    return this.score;
  }

  /** Stretch a timeout by the local health multiplier. */
  scaleTimeout(ms: number): number {
    return ms * (this.score + 1);
  }
}
