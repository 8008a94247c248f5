/**
 * Stop strings across token boundaries: text that could still become a stop string is held back
 * until the next tokens decide, so a client never sees part of a stop string.
 *
 * @module
 */
import { heldPrefix } from "../../model/chat/mod.ts";

/**
 * Longest stop string a request may carry: holding back text that may start one costs time
 * quadratic in its length for every token, so a megabyte-long one would stall the event loop.
 */
export const MAX_STOP_CHARS = 512;

/**
 * Most stop strings a request may carry (OpenAI's bound): each is checked against every token
 * on the head's event loop, and 30 000 of them slowed every request of the head 5×.
 */
export const MAX_STOP_STRINGS = 4;

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
    const keep = Math.max(0, ...this.stops.map((s) => heldPrefix(text, s)));
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

/** An item let through a {@linkcode StopGate}, with the part of its text the client sees. */
export interface Passed<T> {
  item: T;
  text: string;
}

/**
 * Stop strings over tokens: each token is let through once all of its text is (held back while
 * it may start a stop string), and a token whose text lies past a stop string's start never is,
 * so a client sees neither its text nor its log-probability (llama.cpp's server trims them
 * too). The texts let through concatenate to exactly what {@linkcode StopMatcher} lets through.
 *
 * @example
 * ```ts
 * const g = new StopGate<number>(["nn"]);
 * g.push(1, " A");  // { out: [{ item: 1, text: " A" }], stopped: false }
 * g.push(2, "n");   // { out: [], stopped: false } ("n" may start "nn")
 * g.push(3, "n");   // { out: [], stopped: true }: tokens 2 and 3 are dropped
 * ```
 */
export class StopGate<T> {
  readonly #matcher: StopMatcher;
  #queue: { item: T; piece: string; start: number }[] = [];
  /** Characters pushed, and characters the matcher has let through. */
  #pushed = 0;
  #released = 0;

  /** Gate tokens on `stops` (empty strings are ignored). */
  constructor(stops: readonly string[]) {
    this.#matcher = new StopMatcher(stops);
  }

  /** Add a token and its text; returns the tokens now let through, and whether a stop matched. */
  push(item: T, piece: string): { out: Passed<T>[]; stopped: boolean } {
    this.#queue.push({ item, piece, start: this.#pushed });
    this.#pushed += piece.length;
    const { text, stopped } = this.#matcher.push(piece);
    this.#released += text.length;
    return { out: stopped ? this.#cut() : this.#whole(), stopped };
  }

  /**
   * The end of the output: `rest` (text no token carries, e.g. a partial character flushed)
   * goes through the matcher, then everything held is let through unless a stop string
   * matched. `tail`: the part of `rest` the client sees.
   */
  finish(rest: string): { out: Passed<T>[]; tail: string; stopped: boolean } {
    const restStart = this.#pushed;
    this.#pushed += rest.length;
    const last = this.#matcher.push(rest);
    this.#released += last.text.length;
    if (last.stopped) {
      const out = this.#cut();
      return { out, tail: rest.slice(0, Math.max(0, this.#released - restStart)), stopped: true };
    }
    this.#released += this.#matcher.flush().length;
    return { out: this.#whole(), tail: rest, stopped: false };
  }

  /** The tokens at the front whose whole text has been let through. */
  #whole(): Passed<T>[] {
    let n = 0;
    while (n < this.#queue.length) {
      const q = this.#queue[n];
      if (q.start + q.piece.length > this.#released) break;
      n++;
    }
    return this.#queue.splice(0, n).map((q) => ({ item: q.item, text: q.piece }));
  }

  /** At a stop: the tokens that start before it (with their text up to it); the rest dropped. */
  #cut(): Passed<T>[] {
    const cut = this.#released;
    const out = this.#queue.filter((q) => q.start < cut)
      .map((q) => ({ item: q.item, text: q.piece.slice(0, cut - q.start) }));
    this.#queue = [];
    return out;
  }
}
