/**
 * Reasoning ("thinking") in a model's output: Qwen3, DeepSeek-R1 distills and QwQ write their
 * chain of thought inside `<think>…</think>` before the answer. The splitter here separates the
 * two as llama.cpp's server does (`try_parse_reasoning`): the think block is recognised only at
 * the start of the output (after whitespace), its text is stripped of surrounding whitespace,
 * whitespace after `</think>` is dropped, and a block never closed (max_tokens cut it) is all
 * reasoning. A template whose generation prompt already opens `<think>` (QwQ, newer R1) makes
 * the output start inside the block, so only `</think>` appears in it.
 *
 * @example
 * ```ts
 * const s = new ReasoningSplitter();
 * s.push("<think>\nHmm.\n</th");   // { reasoning: "Hmm.", content: "" } ("</th" held back)
 * s.push("ink>\n\nHello");         // { reasoning: "", content: "Hello" }
 * ```
 *
 * @module
 */
import { heldPrefix } from "./held_prefix.ts";

/** The tag that opens a think block. */
export const THINK_OPEN = "<think>";
/** The tag that closes it. */
export const THINK_CLOSE = "</think>";

/**
 * Whether a chat template is a thinking one (Qwen3, DeepSeek-R1, QwQ): it writes or reads
 * `<think>`, so its model's output may begin with a think block.
 */
export function isThinkingTemplate(source: string): boolean {
  return source.includes(THINK_OPEN);
}

/**
 * Whether a rendered prompt ends inside an open think block (the generation prompt wrote
 * `<think>`, as QwQ's and newer DeepSeek-R1 templates do): the output then starts as reasoning.
 * llama.cpp's `thinking_forced_open` test.
 */
export function promptOpensReasoning(prompt: string): boolean {
  return trimEndAscii(prompt).endsWith(THINK_OPEN);
}

/**
 * Whether a rendered prompt ends just after a closed think block (Qwen3's template with
 * `enable_thinking: false` writes an empty one): the turn has had its reasoning, and the output
 * is the answer.
 */
export function promptClosesReasoning(prompt: string): boolean {
  return trimEndAscii(prompt).endsWith(THINK_CLOSE);
}

/** Text a push or the end let through, by where it belongs. */
export interface ReasoningPiece {
  /** Text of the think block (what OpenAI-style APIs call `reasoning_content`). */
  reasoning: string;
  /** Text outside it: the answer. */
  content: string;
}

// ASCII whitespace only, as llama.cpp's std::isspace-based trimming.
const trimStartAscii = (s: string) => s.replace(/^[ \t\n\r\f\v]+/, "");
const trimEndAscii = (s: string) => s.replace(/[ \t\n\r\f\v]+$/, "");

/**
 * Splits a streamed output into reasoning and content. Text that may still become a tag (`<thi`
 * at the start, `</th` inside the block) is held back until the next pieces decide, and so is
 * whitespace at the end of the reasoning (dropped if `</think>` follows); pushed pieces' results
 * concatenate to exactly what {@linkcode splitReasoning} gives for the whole text.
 */
export class ReasoningSplitter {
  #state: "start" | "think" | "after" | "content";
  /** Text not yet decided (a possible tag, or leading whitespace at the start). */
  #held = "";
  /** Characters pushed so far. */
  #pushed = 0;
  /** Where the think block begins and ends in the pushed text (end: just past `</think>`). */
  #from?: number;
  #to?: number;
  /** Whether reasoning text has been let through (leading whitespace is dropped before). */
  #begun = false;
  /** Whitespace at the end of the reasoning so far, let through only if more text follows. */
  #ws = "";

  /** A splitter for an output that starts inside the think block when `startsInside`. */
  constructor(startsInside = false) {
    this.#state = startsInside ? "think" : "start";
    if (startsInside) this.#from = 0;
  }

  /** Add a piece of output; returns what is now decided. */
  push(piece: string): ReasoningPiece {
    const out: ReasoningPiece = { reasoning: "", content: "" };
    let buf = this.#held + piece;
    let at = this.#pushed - this.#held.length;
    this.#pushed += piece.length;
    this.#held = "";
    for (;;) {
      if (this.#state === "start") {
        const rest = trimStartAscii(buf);
        if (rest.startsWith(THINK_OPEN)) {
          const skip = buf.length - rest.length + THINK_OPEN.length;
          this.#from = at + buf.length - rest.length;
          this.#state = "think";
          at += skip;
          buf = buf.slice(skip);
          continue;
        }
        if (THINK_OPEN.startsWith(rest)) {
          this.#held = buf;
          return out;
        }
        // Text first: no think block (llama.cpp looks for one at the start only).
        this.#state = "content";
        continue;
      }
      if (this.#state === "think") {
        const close = buf.indexOf(THINK_CLOSE);
        if (close >= 0) {
          out.reasoning += this.#reasoning(buf.slice(0, close), true);
          this.#to = at + close + THINK_CLOSE.length;
          this.#state = "after";
          at = this.#to;
          buf = buf.slice(close + THINK_CLOSE.length);
          continue;
        }
        const keep = heldPrefix(buf, THINK_CLOSE);
        out.reasoning += this.#reasoning(buf.slice(0, buf.length - keep), false);
        this.#held = buf.slice(buf.length - keep);
        return out;
      }
      if (this.#state === "after") {
        // The whitespace between `</think>` and the answer is dropped, as llama.cpp does.
        const rest = trimStartAscii(buf);
        if (rest === "") return out;
        this.#state = "content";
        buf = rest;
        continue;
      }
      out.content += buf;
      return out;
    }
  }

  /** The end of the output: what was held back, decided (an unclosed block is reasoning). */
  finish(): ReasoningPiece {
    const held = this.#held;
    this.#held = "";
    if (this.#state === "think") return { reasoning: this.#reasoning(held, true), content: "" };
    return { reasoning: "", content: held };
  }

  /**
   * Where the think block lies in the pushed text, [start, end) in UTF-16 units (end is
   * Infinity while it is open); undefined when the output has none.
   */
  span(): [number, number] | undefined {
    return this.#from === undefined ? undefined : [this.#from, this.#to ?? Infinity];
  }

  /** Whether the text pushed so far is still inside the think block. */
  get inside(): boolean {
    return this.#state === "think";
  }

  /** Reasoning text to let through: leading whitespace dropped, trailing held (or, at the end, dropped). */
  #reasoning(text: string, last: boolean): string {
    let s = this.#ws + text;
    this.#ws = "";
    if (!this.#begun) {
      s = trimStartAscii(s);
      if (s === "") return "";
    }
    const body = trimEndAscii(s);
    if (!last) this.#ws = s.slice(body.length);
    if (body) this.#begun = true;
    return body;
  }
}

/** Split a whole output (see {@linkcode ReasoningSplitter}). */
export function splitReasoning(text: string, startsInside = false): ReasoningPiece {
  const s = new ReasoningSplitter(startsInside);
  const a = s.push(text);
  const b = s.finish();
  return { reasoning: a.reasoning + b.reasoning, content: a.content + b.content };
}
