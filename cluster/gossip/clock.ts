/**
 * Time and randomness, injected. The protocol core never calls `Date.now`, `setTimeout` or
 * `Math.random` itself, so the same code runs on real sockets and inside the deterministic
 * simulator (`sim.ts`), where time is a virtual clock driven by an event queue.
 *
 * @module
 */

/** Opaque handle returned by {@linkcode Clock.setTimeout}. */
export type TimerHandle = unknown;

/** A source of time and timers: the real one, or the simulator's virtual clock. */
export interface Clock {
  /** Milliseconds since an arbitrary origin; only differences are meaningful. */
  now(): number;
  /** Run `fn` once after `ms` milliseconds. */
  setTimeout(fn: () => void, ms: number): TimerHandle;
  /** Cancel a timer; cancelling a fired or unknown timer is a no-op. */
  clearTimeout(handle: TimerHandle): void;
}

/** A source of uniform random numbers in [0, 1); seeded in simulations so runs repeat. */
export interface Rng {
  /** The next number in [0, 1). */
  next(): number;
}

/** The wall clock (`performance.now`) and the runtime's timers. */
export const systemClock: Clock = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, Math.max(0, ms)),
  clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

/** `Math.random`, for real deployments where repeatability does not matter. */
export const systemRng: Rng = { next: () => Math.random() };

/**
 * A small, fast, seeded generator (sfc32) so a simulation with the same seed replays exactly.
 *
 * @example
 * ```ts
 * const rng = seededRng(42);
 * rng.next(); // always the same first number for seed 42
 * ```
 */
export function seededRng(seed: number): Rng {
  let a = 0x9e3779b9, b = 0x243f6a88, c = 0xb7e15162, d = seed >>> 0;
  const next = () => {
    a >>>= 0, b >>>= 0, c >>>= 0, d >>>= 0;
    const t = (a + b | 0) + d | 0;
    d = d + 1 | 0;
    a = b ^ b >>> 9;
    b = c + (c << 3) | 0;
    c = c << 21 | c >>> 11;
    c = c + t | 0;
    return (t >>> 0) / 4294967296;
  };
  for (let i = 0; i < 15; i++) next(); // mix the seed in
  return { next };
}

/** Fisher–Yates shuffle in place with an injected generator. */
export function shuffle<T>(items: T[], rng: Rng): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    const tmp = items[i];
    items[i] = items[j];
    items[j] = tmp;
  }
  return items;
}
