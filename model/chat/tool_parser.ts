/**
 * Finds tool calls in a model's output as it streams, by the template's format (tools.ts):
 * text outside calls comes out as content at once, text that may be the start of a call is held
 * back until the next pieces decide, and a call comes out whole once its JSON is complete. A call
 * whose JSON is malformed (or cut off) comes out as the content it was, as llama.cpp returns it:
 * never an error.
 *
 * @module
 */
import { argumentsKey, MAX_TOOL_JSON_DEPTH, type ToolDef, type ToolFormat } from "./tools.ts";
import { heldPrefix } from "./held_prefix.ts";

/** One call found in the output. */
export interface ParsedToolCall {
  /** The function called. */
  name: string;
  /** Its arguments as JSON text (an object), as OpenAI's `function.arguments` carries them. */
  arguments: string;
  /** The id the model gave the call (Mistral writes one), when it did. */
  id?: string;
}

/** What the output turned out to be, in order: text for the user, or a call. */
export type ParsedPiece =
  | { kind: "content"; text: string }
  | { kind: "call"; call: ParsedToolCall };

/** Options of {@linkcode ToolCallParser}. */
export interface ToolCallParserOptions {
  /** The template's format. */
  format: ToolFormat;
  /**
   * The tools offered: where calls carry no marker (Llama 3, generic), a JSON reply is a call
   * only when it names one of them; a JSON answer of another shape stays content.
   */
  tools: readonly ToolDef[];
  /**
   * The output was forced to be exactly one call object (tool_choice "required" or a named
   * function): the format's opener was in the prompt, the output starts with the JSON.
   */
  forced?: boolean;
  /** Calls past this many are dropped (parallel_tool_calls: false is 1); default no bound. */
  maxCalls?: number;
}

const WS = new Set([" ", "\n", "\r", "\t"]);
const PYTHON_TAG = "<|python_tag|>";

/** Where a complete JSON object or array ends in a growing text (scanned once, incrementally). */
class JsonSpan {
  private pos = 0;
  private readonly stack: string[] = [];
  private inString = false;
  private escaped = false;

  /** End (exclusive) of the value in `s`, -1 while incomplete, -2 when it cannot be one. */
  feed(s: string): number {
    for (; this.pos < s.length; this.pos++) {
      const c = s[this.pos];
      if (this.stack.length === 0) {
        if (WS.has(c)) continue;
        if (c !== "{" && c !== "[") return -2;
        this.stack.push(c === "{" ? "}" : "]");
        continue;
      }
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (c === "\\") this.escaped = true;
        else if (c === '"') this.inString = false;
        continue;
      }
      if (c === '"') this.inString = true;
      else if (c === "{" || c === "[") {
        this.stack.push(c === "{" ? "}" : "]");
        if (this.stack.length > MAX_TOOL_JSON_DEPTH + 2) return -2;
      } else if (c === "}" || c === "]") {
        if (this.stack.pop() !== c) return -2;
        if (this.stack.length === 0) return ++this.pos;
      }
    }
    return -1;
  }
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);

/**
 * The streaming parser of one generation.
 *
 * @example
 * ```ts
 * const p = new ToolCallParser({ format: "hermes", tools });
 * p.push("Let me look.\n<tool_");  // [{kind: "content", text: "Let me look.\n"}]
 * p.push('call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>');
 * // [{kind: "call", call: {name: "get_weather", arguments: '{"city":"Paris"}'}}]
 * p.finish();                      // []
 * ```
 */
export class ToolCallParser {
  /** Text not decided yet. */
  private buf = "";
  /**
   * `text`: looking for a call marker (Hermes, Mistral); `lead`: where a markerless call may
   * begin (the output's start, or after a call); `call`: inside a call's JSON; `close`: after a
   * Hermes call, where `</tool_call>` may follow; `after`: after a marked call, where
   * whitespace before the next call or the end is dropped; `content`: the rest is content.
   */
  private state: "text" | "lead" | "call" | "close" | "after" | "content";
  /** The text that opened the current call (its marker), given back if the call is malformed. */
  private opener = "";
  private span = new JsonSpan();
  private readonly names: Set<string>;
  private readonly marker?: string;
  /** Calls found so far (including any dropped past maxCalls). */
  calls = 0;

  /** A parser for one generation. */
  constructor(private readonly opts: ToolCallParserOptions) {
    this.names = new Set(opts.tools.map((t) => t.name));
    const markers = { hermes: "<tool_call>", mistral: "[TOOL_CALLS]" } as Record<string, string>;
    this.marker = opts.forced ? undefined : markers[opts.format];
    this.state = this.marker ? "text" : "lead";
  }

  /** Add a piece of output; returns what it decided. */
  push(text: string): ParsedPiece[] {
    this.buf += text;
    return this.drain(false);
  }

  /** The output ended: everything still held is decided (an unfinished call is content). */
  finish(): ParsedPiece[] {
    return this.drain(true);
  }

  private drain(final: boolean): ParsedPiece[] {
    const out: ParsedPiece[] = [];
    const content = (text: string) => {
      if (!text) return;
      const last = out.at(-1);
      if (last?.kind === "content") last.text += text;
      else out.push({ kind: "content", text });
    };
    for (;;) {
      switch (this.state) {
        case "content":
          content(this.buf);
          this.buf = "";
          return out;
        case "text": {
          const marker = this.marker!;
          const at = this.buf.indexOf(marker);
          if (at >= 0) {
            content(this.buf.slice(0, at));
            this.enterCall(marker, this.buf.slice(at + marker.length));
            continue;
          }
          const keep = final ? 0 : heldPrefix(this.buf, marker);
          content(this.buf.slice(0, this.buf.length - keep));
          this.buf = this.buf.slice(this.buf.length - keep);
          return out;
        }
        case "lead": {
          const t = this.buf.trimStart();
          if (t === "") {
            // Trailing whitespace after a call is dropped; an output of only whitespace is kept.
            if (final) content(this.calls ? "" : this.buf);
            if (final) this.buf = "";
            return out;
          }
          if (this.calls > 0 && t[0] === ";") {
            // Llama 3.2 separates calls with "; ".
            this.buf = t.slice(1);
            continue;
          }
          if (this.opts.format === "llama3" && !this.opts.forced) {
            if (t.startsWith(PYTHON_TAG)) {
              this.enterCall(
                this.buf.slice(0, this.buf.length - t.length) + PYTHON_TAG,
                t.slice(PYTHON_TAG.length),
              );
              continue;
            }
            if (!final && PYTHON_TAG.startsWith(t)) return out;
          }
          if (t[0] === "{") {
            this.enterCall(this.buf.slice(0, this.buf.length - t.length), t);
            continue;
          }
          this.state = "content";
          if (this.calls > 0) this.buf = t;
          continue;
        }
        case "call": {
          const end = this.span.feed(this.buf);
          if (end === -1 && !final) return out;
          if (end < 0) {
            // Not JSON, or cut off: what the model wrote is the answer.
            content(this.opener + this.buf);
            this.buf = "";
            this.state = "content";
            continue;
          }
          const json = this.buf.slice(0, end);
          this.buf = this.buf.slice(end);
          const calls = this.interpret(json);
          if (!calls) {
            content(this.opener + json);
            this.state = "content";
            continue;
          }
          for (const call of calls) {
            this.calls++;
            if (this.opts.maxCalls === undefined || this.calls <= this.opts.maxCalls) {
              out.push({ kind: "call", call });
            }
          }
          this.state = this.opts.format === "hermes" && this.marker
            ? "close"
            : this.marker
            ? "after"
            : "lead";
          continue;
        }
        case "close": {
          const t = this.buf.trimStart();
          const close = "</tool_call>";
          if (t.startsWith(close)) {
            this.buf = t.slice(close.length);
            this.state = "after";
            continue;
          }
          if (!final && close.startsWith(t)) return out;
          // No closing tag (the turn ended, or text follows): the call stands.
          this.state = "after";
          continue;
        }
        case "after": {
          // Whitespace between calls, or after the last, is no content.
          const t = this.buf.trimStart();
          const marker = this.marker!;
          if (!final && marker.startsWith(t)) return out;
          if (t === "" || t.startsWith(marker)) this.buf = t;
          this.state = "text";
          continue;
        }
      }
    }
  }

  private enterCall(opener: string, rest: string) {
    this.opener = opener;
    this.buf = rest;
    this.span = new JsonSpan();
    this.state = "call";
  }

  /** The calls a complete JSON text holds, or undefined when it is not a call of this format. */
  private interpret(json: string): ParsedToolCall[] | undefined {
    let v: unknown;
    try {
      v = JSON.parse(json);
    } catch {
      return undefined;
    }
    // Markerless output is a call only when it names an offered tool: a JSON answer is content.
    const known = this.marker === undefined;
    let items: unknown[];
    if (Array.isArray(v)) {
      if (this.opts.format !== "mistral" || this.opts.forced) return undefined;
      items = v;
    } else if (isObj(v) && Array.isArray(v.tool_calls) && !("name" in v) && known) {
      items = v.tool_calls;
    } else items = [v];
    if (items.length === 0) return undefined;
    const calls: ParsedToolCall[] = [];
    for (const item of items) {
      if (!isObj(item) || typeof item.name !== "string") return undefined;
      if (known && !this.names.has(item.name)) return undefined;
      const key = argumentsKey(this.opts.format);
      const other = key === "arguments" ? "parameters" : "arguments";
      let args = item[key] ?? item[other] ?? {};
      if (typeof args === "string") {
        // Some models write the arguments as JSON text, as OpenAI carries them.
        try {
          args = JSON.parse(args);
        } catch {
          return undefined;
        }
      }
      if (!isObj(args)) return undefined;
      const call: ParsedToolCall = { name: item.name, arguments: JSON.stringify(args) };
      if (typeof item.id === "string" && item.id) call.id = item.id;
      calls.push(call);
    }
    return calls;
  }
}

/**
 * A whole output at once: the content (text outside calls, joined) and the calls.
 *
 * @example
 * ```ts
 * parseToolOutput('{"name": "now", "parameters": {}}', { format: "llama3", tools });
 * // { content: "", calls: [{ name: "now", arguments: "{}" }] }
 * ```
 */
export function parseToolOutput(
  text: string,
  opts: ToolCallParserOptions,
): { content: string; calls: ParsedToolCall[] } {
  const p = new ToolCallParser(opts);
  const pieces = [...p.push(text), ...p.finish()];
  return {
    content: pieces.map((x) => x.kind === "content" ? x.text : "").join(""),
    calls: pieces.flatMap((x) => x.kind === "call" ? [x.call] : []),
  };
}
