/**
 * Stop strings across token boundaries: text that could still become a stop string is held back
 * until the next tokens decide, so a client never sees part of a stop string.
 *
 * @module
 */

/**
 * Longest stop string a request may carry: holding back text that may start one costs time
 * quadratic in its length for every token, so a megabyte-long one would stall the event loop.
 */
export const MAX_STOP_CHARS = 512;

/**
 * Streams text pieces, cutting at the first stop string.
 *
 * @example
 * ```ts
 * const m = new StopMatcher(["\n\n"]);
 * m.push("Hello\n");      // { text: "Hello", stopped: false } ("\n" held back)
 * m.push("\nWorld");      // { text: "", stopped: true }
 * ```
 */
export class StopMatcher {
  private held = "";
  private readonly stops: string[];

  /** Match `stops` (empty strings are ignored). */
  constructor(stops: readonly string[]) {
    this.stops = stops.filter((s) => s.length > 0);
  }

  /** Add a piece; returns the text now safe to show and whether a stop string appeared. */
  push(piece: string): { text: string; stopped: boolean } {
    if (this.stops.length === 0) return { text: piece, stopped: false };
    const text = this.held + piece;
    let cut = -1;
    for (const s of this.stops) {
      const at = text.indexOf(s);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      this.held = "";
      return { text: text.slice(0, cut), stopped: true };
    }
    // Hold back the longest tail that is a prefix of some stop string.
    let keep = 0;
    for (const s of this.stops) {
      for (let n = Math.min(s.length - 1, text.length); n > keep; n--) {
        if (text.endsWith(s.slice(0, n))) {
          keep = n;
          break;
        }
      }
    }
    this.held = text.slice(text.length - keep);
    return { text: text.slice(0, text.length - keep), stopped: false };
  }

  /** The text still held back (the output ended without a stop string). */
  flush(): string {
    const t = this.held;
    this.held = "";
    return t;
  }
}
