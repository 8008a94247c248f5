/**
 * A JSON constraint that waits for a thinking model's reasoning: the output may hold a
 * `<think>…</think>` block before the value, as vLLM lets a reasoning model finish its block
 * before structured output starts. Until the block is closed every token is allowed; from the
 * byte after `</think>` the JSON constraint holds. `open`: the prompt opened the block (QwQ, newer
 * DeepSeek-R1 templates), so the output starts inside it. `start`: the output may open one at its
 * very start (Qwen3), with `<think>` in one token or several; any other first token starts the
 * value.
 *
 * @example
 * ```ts
 * const gate = new ReasoningGate(new JsonConstraint(spec), "open");
 * gate.mask(); // every token, until the output has written </think>
 * ```
 *
 * @module
 */
import { JsonConstraint, JsonConstraintError } from "./json.ts";
import type { Vocabulary } from "./vocabulary.ts";

const enc = new TextEncoder();
const OPEN = enc.encode("<think>");
const CLOSE = enc.encode("</think>");

/** Where the output stands: before anything, partway into `<think>`, inside, or in the value. */
type Phase = "start" | "opening" | "think" | "json";

/** What the sampler needs of an output constraint (JsonConstraint has the same). */
export interface OutputConstraint {
  readonly vocabulary: Vocabulary;
  readonly spec: JsonConstraint["spec"];
  readonly complete: boolean;
  accept(id: number): void;
  mask(): Uint8Array;
}

/** A JsonConstraint that starts after a think block (see the module doc). */
export class ReasoningGate implements OutputConstraint {
  #phase: Phase;
  /** Bytes of `<think>` matched so far ("start", "opening"). */
  #matched = 0;
  /** The block's last bytes ("think"), where a `</think>` split across tokens begins. */
  #tail = new Uint8Array(0);

  constructor(readonly inner: JsonConstraint, mode: "open" | "start") {
    this.#phase = mode === "open" ? "think" : "start";
  }

  get vocabulary(): Vocabulary {
    return this.inner.vocabulary;
  }

  get spec(): JsonConstraint["spec"] {
    return this.inner.spec;
  }

  /** The value is complete (never while the block is open). */
  get complete(): boolean {
    return this.#phase === "json" && this.inner.complete;
  }

  /** Whether the output is inside its think block (the value has not started). */
  get thinking(): boolean {
    return this.#phase !== "json";
  }

  /** Advance over one output token. */
  accept(id: number): void {
    const v = this.vocabulary;
    const bytes = id >= 0 && id < v.size ? v.pieces[id] : new Uint8Array(0);
    if (this.#phase === "json") return this.inner.accept(id);
    if (this.#phase === "think") return this.#inside(bytes);
    // start / opening: the token goes on with `<think>`, or (at the very start) begins the value.
    const n = openMatch(bytes, this.#matched);
    if (n < 0) {
      if (this.#phase === "opening") {
        throw new JsonConstraintError(`token ${id} breaks off the <think> tag`);
      }
      this.#phase = "json";
      return this.inner.accept(id);
    }
    this.#matched += n;
    if (this.#matched < OPEN.length) {
      this.#phase = "opening";
      return;
    }
    this.#phase = "think";
    this.#inside(bytes.subarray(n));
  }

  /** Bits of the tokens allowed next (see JsonConstraint.mask). */
  mask(): Uint8Array {
    const v = this.vocabulary;
    if (this.#phase === "json") return this.inner.mask();
    if (this.#phase === "think") {
      const k = closePrefix(this.#tail);
      return cached(v, `think:${k}`, () => thinkMask(v, k));
    }
    const from = this.#matched;
    const opening = cached(v, `open:${from}`, () => tokensWhere(v, (p) => openMatch(p, from) >= 0));
    if (this.#phase === "opening") return opening;
    // At the start: the tag's first tokens or the value's (once per request: not kept).
    const json = this.inner.mask();
    return json.map((b, i) => b | opening[i]);
  }

  /** Bytes inside the block: look for `</think>` across token borders; the value starts after. */
  #inside(bytes: Uint8Array): void {
    const buf = new Uint8Array(this.#tail.length + bytes.length);
    buf.set(this.#tail);
    buf.set(bytes, this.#tail.length);
    const at = indexOf(buf, CLOSE);
    if (at < 0) {
      this.#tail = buf.slice(Math.max(0, buf.length - (CLOSE.length - 1)));
      return;
    }
    this.#phase = "json";
    this.#tail = new Uint8Array(0);
    // Whitespace after the tag is not the value's (the reasoning splitter drops it too).
    const rest = afterWhitespace(buf.subarray(at + CLOSE.length));
    if (rest.length > 0) this.inner.acceptBytes(rest);
  }
}

/**
 * How many bytes of `piece` go on with `<think>` from its byte `from` (the whole piece when it
 * ends inside the tag, the rest of the tag when the piece holds it all and more); −1 when it
 * breaks off the tag, or is empty.
 */
function openMatch(piece: Uint8Array, from: number): number {
  if (piece.length === 0) return -1;
  const n = Math.min(piece.length, OPEN.length - from);
  for (let i = 0; i < n; i++) if (piece[i] !== OPEN[from + i]) return -1;
  return n;
}

function indexOf(hay: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

function cached(v: Vocabulary, key: string, make: () => Uint8Array): Uint8Array {
  const k = `reasoning\u0000${key}`;
  let m = v.masks.get(k);
  if (!m) v.masks.set(k, m = make());
  return m;
}

function tokensWhere(v: Vocabulary, keep: (piece: Uint8Array) => boolean): Uint8Array {
  const bits = new Uint8Array((v.size + 7) >> 3);
  for (let id = 0; id < v.size; id++) if (keep(v.pieces[id])) bits[id >> 3] |= 1 << (id & 7);
  return bits;
}

/** `bytes` from its first byte that is not ASCII whitespace. */
function afterWhitespace(bytes: Uint8Array): Uint8Array {
  let i = 0;
  while (i < bytes.length && (bytes[i] === 0x20 || (bytes[i] >= 0x09 && bytes[i] <= 0x0d))) i++;
  return bytes.subarray(i);
}

/** Length of the longest end of `tail` that begins `</think>` (the tag has no self-overlap). */
function closePrefix(tail: Uint8Array): number {
  for (let k = Math.min(tail.length, CLOSE.length - 1); k > 0; k--) {
    let ok = true;
    for (let j = 0; j < k && ok; j++) ok = tail[tail.length - k + j] === CLOSE[j];
    if (ok) return k;
  }
  return 0;
}

/**
 * Inside the block, with `k` bytes of `</think>` just written: every token but those that would
 * close the block and go on with more than whitespace (the value may not begin in the same token
 * as the tag's end: one that cannot begin it could not be taken back). Pieces that render as
 * nothing (control tokens) are allowed: an end-of-generation token may end the output inside the
 * block, as it would unconstrained.
 */
function thinkMask(v: Vocabulary, k: number): Uint8Array {
  const bits = new Uint8Array((v.size + 7) >> 3).fill(0xff);
  if (v.size & 7) bits[bits.length - 1] = (1 << (v.size & 7)) - 1;
  const head = new Uint8Array(k);
  head.set(CLOSE.subarray(0, k));
  for (let id = 0; id < v.size; id++) {
    const p = v.pieces[id];
    if (p.length === 0 || p.indexOf(0x3e) < 0) continue; // no '>': cannot end the tag
    const buf = new Uint8Array(k + p.length);
    buf.set(head);
    buf.set(p, k);
    const at = indexOf(buf, CLOSE);
    if (at >= 0 && afterWhitespace(buf.subarray(at + CLOSE.length)).length > 0) {
      bits[id >> 3] &= ~(1 << (id & 7));
    }
  }
  return bits;
}
