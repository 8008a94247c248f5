/**
 * The summary figures the benches print: a median of rounds and rounding for the JSON.
 * @module
 */

/** The median of `xs` (the mean of the middle two for an even count). */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** `x` rounded to `d` decimals. */
export function round(x: number, d = 2): number {
  return Math.round(x * 10 ** d) / 10 ** d;
}
