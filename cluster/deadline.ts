/**
 * Waiting for a promise, but not for ever: the shapes the cluster code needs, each with its
 * timer or listener cleared however the wait ends (one left behind would keep the process alive,
 * or the signal's listeners growing).
 *
 * @module
 */

/** Wait until `p` settles (either way) or `ms` pass, whichever comes first; never throws. */
export async function settleWithin(p: Promise<unknown> | undefined, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      p?.then(() => {}, () => {}),
      new Promise<void>((r) => (timer = setTimeout(r, ms))),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** `p`, or the error `late()` makes (called when `ms` have passed first). */
export async function orTimeout<T>(p: Promise<T>, ms: number, late: () => Error): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(late()), ms))),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * `p`, or a rejection with `signal`'s reason as soon as it aborts (`p` runs on; its outcome is
 * dropped, never left to reject unhandled).
 */
export function untilAborted<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return p;
  p.catch(() => {});
  if (signal.aborted) return Promise.reject(signal.reason);
  let onAbort!: () => void;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
  });
  return Promise.race([p, aborted]).finally(() => signal.removeEventListener("abort", onAbort));
}
