/**
 * Chat templates: turn a conversation into the prompt text a model was trained on, from the
 * Jinja template in the GGUF's `tokenizer.chat_template` (rendered with `@huggingface/jinja`,
 * the way transformers' `apply_chat_template` does), or a plain transcript when the file has none.
 *
 * @module
 */
import { Template } from "@huggingface/jinja";
import type { MetadataLike, Tokenizer } from "../tokenizer/mod.ts";
import {
  detectToolFormat,
  genericToolPrompt,
  type ToolCallRecord,
  type ToolDef,
  type ToolFormat,
} from "./tools.ts";
import { isThinkingTemplate } from "./reasoning.ts";
import { RESERVED_TEMPLATE_VARS } from "./template_kwargs.ts";

/** The roles a conversation's turns may have: OpenAI's (any other string would be rendered into
 * the template as a speaker the model never saw). */
export const CHAT_ROLES: readonly string[] = [
  "system",
  "developer",
  "user",
  "assistant",
  "tool",
  "function",
];

/** One turn of a conversation. */
export interface ChatMessage {
  /**
   * "system", "user", "assistant" (templates may accept others, e.g. "tool"); "developer" is
   * rendered as "system", as OpenAI treats it.
   */
  role: string;
  /** The turn's text ("" for an assistant turn that only called tools). */
  content: string;
  /** An assistant turn's tool calls. */
  toolCalls?: ToolCallRecord[];
  /** A "tool" turn's answer to this call id. */
  toolCallId?: string;
  /** A "tool" turn's function name (some templates print it). */
  name?: string;
}

/** Options of {@linkcode ChatTemplate.render}. */
export interface RenderOptions {
  /** End with the assistant's turn opener (default true). */
  addGenerationPrompt?: boolean;
  /** Tools offered to the model: given to the template, or described in a system prompt. */
  tools?: readonly ToolDef[];
  /**
   * Extra template variables (`chat_template_kwargs`, checked by template_kwargs.ts), e.g.
   * `enable_thinking`; the renderer's own variables win over them.
   */
  kwargs?: Readonly<Record<string, unknown>>;
}

/** A rendered conversation, ready to tokenize. */
export interface RenderedChat {
  /** The prompt text. */
  text: string;
  /**
   * Whether the tokenizer should prepend BOS: the vocabulary asks for it and the template did
   * not already write it (Llama-3 templates start with `{{ bos_token }}`).
   */
  addBos: boolean;
  /** Whether control-token text (`<|im_start|>`) must become control tokens (template output). */
  parseSpecial: boolean;
  /**
   * Where the messages' contents lie in `text` (UTF-16 [start, end)): control-token text there
   * is the client's text, not a token (Tokenizer.encode's `literal`).
   */
  literal: [number, number][];
}

/**
 * The fallback when a model has no template: a transcript that base models continue naturally.
 *
 * ```
 * System: You are terse.
 * User: Hello
 * Assistant:
 * ```
 */
export const FALLBACK_TEMPLATE: string = "{% for m in messages %}" +
  "{{ m.role[0] | upper }}{{ m.role[1:] }}: {{ m.content }}\n" +
  "{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}";

/** The template text cannot be parsed or rendered; the message says where. */
export class ChatTemplateError extends Error {
  /** Error name. */
  override name = "ChatTemplateError";
  /** Bad input, not a bug: RPC callers see INVALID_ARGUMENT (HTTP 400). */
  readonly rpcCode = "invalid_argument";
}

/**
 * A model's chat template with its special tokens.
 *
 * @example
 * ```ts
 * const chat = ChatTemplate.fromMetadata(file.metadata, tokenizer);
 * const { text, addBos, parseSpecial } = chat.render([{ role: "user", content: "Hi" }]);
 * const ids = tokenizer.encode(text, { addBos, parseSpecial });
 * ```
 */
export class ChatTemplate {
  private readonly compiled: Template;
  /** How this template's tool calls look (tools.ts); `generic` when it knows none. */
  readonly toolFormat: ToolFormat;
  /** A thinking template (writes `<think>`): its output may open with reasoning (reasoning.ts). */
  readonly thinking: boolean;

  /** Compile `source`; `fromModel` says it came from the GGUF (its output holds control tokens). */
  constructor(
    readonly source: string,
    readonly bosToken: string,
    readonly eosToken: string,
    readonly fromModel: boolean,
    private readonly addBosDefault: boolean,
  ) {
    try {
      this.compiled = new Template(source);
    } catch (e) {
      throw new ChatTemplateError(`the chat template does not parse: ${(e as Error).message}`);
    }
    this.toolFormat = detectToolFormat(source, fromModel);
    this.thinking = fromModel && isThinkingTemplate(source);
  }

  /**
   * The template of a model: `tokenizer.chat_template` when present and parseable, else
   * {@linkcode FALLBACK_TEMPLATE}. `warning` says why the fallback was taken over a bad template.
   */
  static fromMetadata(md: MetadataLike, tokenizer: Tokenizer): ChatTemplate {
    const src = md.get("tokenizer.chat_template");
    const bos = tokenizer.bos === null ? "" : tokenizer.tokenText(tokenizer.bos);
    const eos = tokenizer.eos === null ? "" : tokenizer.tokenText(tokenizer.eos);
    if (typeof src === "string" && src.trim() !== "") {
      try {
        return new ChatTemplate(src, bos, eos, true, tokenizer.addBos);
      } catch (e) {
        const t = new ChatTemplate(FALLBACK_TEMPLATE, bos, eos, false, tokenizer.addBos);
        t.warning = `tokenizer.chat_template ignored: ${(e as Error).message}`;
        return t;
      }
    }
    return new ChatTemplate(FALLBACK_TEMPLATE, bos, eos, false, tokenizer.addBos);
  }

  /** Set when the model's own template could not be used. */
  warning?: string;

  /**
   * Render `messages`, ending with the assistant's turn opener unless told otherwise. Tool calls
   * and results travel as transformers' `apply_chat_template` passes them (`tool_calls: [{id,
   * type, function: {name, arguments}}]`, `tool_call_id`, `tools: [{type, function}]`); a
   * `generic` template gets them as plain turns instead (tools.ts).
   */
  render(messages: ChatMessage[], opts: RenderOptions = {}): RenderedChat {
    if (messages.length === 0) throw new ChatTemplateError("messages is empty; send at least one");
    const tools = opts.tools?.length ? opts.tools : undefined;
    const generic = this.toolFormat === "generic";
    const turns = generic ? genericTurns(messages, tools) : messages.map(templateTurn);
    // Checked by the doors already; dropped here too, so no caller can replace the conversation.
    const kwargs = Object.fromEntries(
      Object.entries(opts.kwargs ?? {}).filter(([k]) => !RESERVED_TEMPLATE_VARS.includes(k)),
    );
    const render = (messages: Record<string, unknown>[]) =>
      this.compiled.render({
        ...kwargs,
        messages,
        add_generation_prompt: opts.addGenerationPrompt ?? true,
        bos_token: this.bosToken,
        eos_token: this.eosToken,
        ...(tools && !generic
          ? {
            tools: tools.map((t) => ({ type: "function", function: { ...t } })),
          }
          : {}),
      });
    let text: string;
    try {
      text = render(turns);
    } catch (e) {
      throw new ChatTemplateError(
        `the chat template failed on these messages: ${(e as Error).message}`,
      );
    }
    const hasBos = this.bosToken !== "" && text.startsWith(this.bosToken);
    return {
      text,
      addBos: this.addBosDefault && !hasBos,
      parseSpecial: this.fromModel,
      literal: this.fromModel ? contentSpans(turns, text, render) : [],
    };
  }
}

/** Most turns located one by one when the whole conversation's sentinel render does not agree. */
const MAX_TURNS_ONE_BY_ONE = 64;

/**
 * The forms a template may write a content in: as it is, or trimmed (Llama 3's and Gemma 3's
 * templates write `message['content'] | trim`).
 */
const contentForms = (
  c: string,
): string[] => [...new Set([c, c.trim(), c.trimEnd(), c.trimStart()])];

/**
 * Where each turn's content lies in `text`: render again with each content replaced by a
 * sentinel, then walk the render against `text`, each sentinel standing for its content as it is,
 * trimmed, or a part of it that the template's next text follows; where that gives `text`
 * exactly, the sentinels' places are the contents'. The
 * sentinels carry a nonce drawn for each render (private-use characters around it), so no
 * content can hold one or forge one. A template that reads a content (Qwen3's
 * `startswith('<tool_response>')`) can render a sentinel differently; then each turn is tried
 * alone, and a turn still not located has no span (its control-token text is parsed, as
 * llama.cpp parses all of it).
 */
function contentSpans(
  turns: Record<string, unknown>[],
  text: string,
  render: (turns: Record<string, unknown>[]) => string,
): [number, number][] {
  const contents = turns.map((t) => typeof t.content === "string" ? t.content : undefined);
  const nonce = crypto.getRandomValues(new Uint32Array(2)).join("-");
  const mark = new RegExp(`\u{F0000}${nonce}:(\\d+)\u{F0001}`, "gu");
  const located = (which: number[]): [number, number][] | undefined => {
    const subst = turns.map((t, i) =>
      which.includes(i) && contents[i] !== undefined
        ? { ...t, content: `\u{F0000}${nonce}:${i}\u{F0001}` }
        : t
    );
    let out: string;
    try {
      out = render(subst);
    } catch {
      return undefined;
    }
    const spans: [number, number][] = [];
    let at = 0; // where out's next piece must lie in text
    let last = 0;
    const marks = [...out.matchAll(mark)];
    for (let k = 0; k < marks.length; k++) {
      const m = marks[k];
      const literal = out.slice(last, m.index);
      if (!text.startsWith(literal, at)) return undefined;
      at += literal.length;
      last = m.index! + m[0].length;
      // the template's text up to the next sentinel must follow the content's form
      const after = out.slice(last, marks[k + 1]?.index ?? out.length);
      const content = contents[Number(m[1])] ?? "";
      const form = contentForms(content).find((c) =>
        text.startsWith(c, at) && text.startsWith(after, at + c.length)
      );
      let end = form === undefined ? -1 : at + form.length;
      if (end < 0 && after !== "") {
        // A part of the content (Qwen3 writes an assistant turn's text after its `</think>`):
        // up to where the template's own text goes on, if what lies before is the content's.
        const j = k + 1 < marks.length
          ? text.indexOf(after, at)
          : text.endsWith(after)
          ? text.length - after.length
          : -1;
        if (j >= at && content.includes(text.slice(at, j))) end = j;
      }
      if (end < 0) return undefined;
      spans.push([at, end]);
      at = end;
    }
    const rest = out.slice(last);
    return text.startsWith(rest, at) && at + rest.length === text.length
      ? spans.filter(([a, b]) => b > a)
      : undefined;
  };
  const all = turns.map((_, i) => i).filter((i) => contents[i]);
  const together = located(all);
  if (together) return together;
  return all.slice(-MAX_TURNS_ONE_BY_ONE).flatMap((i) => located([i]) ?? []);
}

/**
 * A turn as templates read it: OpenAI's "developer" is the system prompt under its newer name
 * (no template knows it: ChatML would render a turn the model never saw, others refuse the
 * role); tool fields only where set (Llama 3's template tests `'tool_calls' in message`).
 */
function templateTurn(m: ChatMessage): Record<string, unknown> {
  const turn: Record<string, unknown> = {
    role: m.role === "developer" ? "system" : m.role,
    content: m.content,
  };
  if (m.toolCalls?.length) {
    turn.tool_calls = m.toolCalls.map((c) => ({
      id: c.id,
      type: "function",
      function: { name: c.name, arguments: c.arguments },
    }));
  }
  if (m.toolCallId !== undefined) turn.tool_call_id = m.toolCallId;
  if (m.name !== undefined) turn.name = m.name;
  return turn;
}

/**
 * The turns of a template that knows no tools: the tools described in the system prompt, calls
 * written as the JSON the prompt asks for, and each run of tool results as one user turn (such
 * templates refuse unknown roles or demand alternating user/assistant turns).
 */
function genericTurns(
  messages: ChatMessage[],
  tools: readonly ToolDef[] | undefined,
): Record<string, unknown>[] {
  const turns: Record<string, unknown>[] = [];
  for (const m of messages) {
    if (m.role === "tool") {
      const result = { tool_call_id: m.toolCallId, name: m.name, content: m.content };
      const last = turns.at(-1);
      if (last?.results) (last.results as unknown[]).push(result);
      else turns.push({ role: "user", results: [result] });
      continue;
    }
    const turn = templateTurn(m);
    if (m.toolCalls?.length) {
      const calls = m.toolCalls.map((c) => ({ name: c.name, arguments: c.arguments }));
      const json = JSON.stringify({ tool_calls: calls });
      turn.content = m.content ? `${m.content}\n${json}` : json;
      delete turn.tool_calls;
    }
    turns.push(turn);
  }
  for (const t of turns) {
    if (t.results) {
      t.content = JSON.stringify({ tool_results: t.results });
      delete t.results;
    }
  }
  if (tools) {
    const prompt = genericToolPrompt(tools);
    if (turns[0].role === "system") {
      turns[0] = { ...turns[0], content: `${turns[0].content}\n\n${prompt}` };
    } else turns.unshift({ role: "system", content: prompt });
  }
  return turns;
}
