/**
 * Waiting for a promise, but not for ever: the two shapes the cluster code needs, each with its
 * timer cleared however the wait ends (a timer left behind would keep the process alive).
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
