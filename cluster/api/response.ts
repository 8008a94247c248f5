/**
 * The OpenAI response format: a generation's events shaped into the responses, stream chunks,
 * logprobs and usage objects that the official clients parse (a thinking model's reasoning
 * split from its answer, and tool calls read out of the answer when tools are in play).
 *
 * @module
 */
import {
  type ParsedPiece,
  ReasoningSplitter,
  ToolCallParser,
  type ToolFormat,
} from "../../model/chat/mod.ts";
import type { DoneEvent, PromptEvent, TokenChoice, TokenEvent } from "./generator.ts";
import type { ParsedRequest } from "./request.ts";
import { toolCallId } from "./tools.ts";

/** Chat-format logprob entry of one token. */
function chatLogprob(t: TokenChoice, top: TokenChoice[]) {
  const enc = (c: TokenChoice) => ({
    token: c.text,
    logprob: c.logprob,
    bytes: [...(c.bytes ?? new TextEncoder().encode(c.text))],
  });
  return { ...enc(t), top_logprobs: top.map(enc) };
}

/** A call as a chat response carries it. */
interface ResponseToolCall {
  id: string;
  type: "function";
  function: { name: string; arguments: string };
}

/** What a chat stream chunk's delta may carry. */
interface ChunkDelta {
  content?: string;
  reasoning_content?: string;
  tool_calls?: unknown[];
}

/** Collects a generation into one response (and builds stream chunks on the way). */
export class CompletionBuilder {
  /** Response id (`chatcmpl-…` / `cmpl-…`). */
  readonly id: string;
  /** Unix seconds. */
  readonly created: number = Math.floor(Date.now() / 1000);
  private text = "";
  private readonly tokens: TokenEvent[] = [];
  private sentRole = false;
  /** Finds tool calls in the output, when tools are in play. */
  private readonly parser?: ToolCallParser;
  private readonly toolFormat?: ToolFormat;
  /** The content outside tool calls (with a parser or a reasoning split). */
  private content = "";
  private readonly calls: ResponseToolCall[] = [];
  /** Splits reasoning from content (req.splitReasoning), made at the first token. */
  private splitter?: ReasoningSplitter;
  /** The prompt left a think block open: the output starts as reasoning. */
  private reasoningOpen = false;
  /** The reasoning let through so far. */
  private reasoning = "";

  /** A builder for one request (`index`: its choice's place among a batch's prompts). */
  constructor(readonly req: ParsedRequest, readonly model: string, readonly index = 0) {
    this.id = (req.endpoint === "chat" ? "chatcmpl-" : "cmpl-") + crypto.randomUUID();
    if (req.toolParser) {
      this.parser = new ToolCallParser(req.toolParser);
      this.toolFormat = req.toolParser.format;
    }
  }

  /** What the rendered prompt says (sent before the first token): a think block it opened. */
  prompt(ev: PromptEvent): void {
    if (!this.splitter) this.reasoningOpen = ev.reasoningOpen;
  }

  /** Record a token; returns the stream chunks for it (none when it adds nothing visible). */
  token(ev: TokenEvent): Record<string, unknown>[] {
    const offset = this.text.length;
    this.text += ev.text;
    this.tokens.push(ev);
    const logprobs = this.req.stream && this.req.logprobs ? this.logprobsOf([ev], offset) : null;
    if (!this.parser && !this.req.splitReasoning) {
      if (!this.req.stream) return [];
      if (!ev.text && !this.req.logprobs && this.sentRole) return [];
      return [this.chunk({ content: ev.text }, null, logprobs)];
    }
    const { reasoning, content } = this.split(ev.text, false);
    const { text, calls } = this.decide(content);
    if (!this.req.stream) return [];
    const chunks = [];
    if (reasoning || text || logprobs || !this.sentRole) {
      chunks.push(this.chunk(this.delta(reasoning, text), null, logprobs));
    }
    return [...chunks, ...calls.flatMap((c) => this.callChunks(c))];
  }

  /** The first chunk of a chat stream (role only), sent before any token. */
  roleChunk(): Record<string, unknown> | null {
    if (this.req.endpoint !== "chat" || this.sentRole) return null;
    return this.chunk({ content: "" }, null, null);
  }

  /** The last chunks: what the end decided, the last with finish_reason. */
  finalChunks(done: DoneEvent): Record<string, unknown>[] {
    this.text += done.text;
    if (!this.parser && !this.req.splitReasoning) {
      return [this.chunk({ content: done.text }, finishReason(done), null)];
    }
    const { reasoning, content } = this.split(done.text, true);
    const { text, calls } = this.decide(content, true);
    const chunks = reasoning || text ? [this.chunk(this.delta(reasoning, text), null, null)] : [];
    chunks.push(...calls.flatMap((c) => this.callChunks(c)));
    chunks.push(this.chunk({}, this.finishReason(done), null));
    return chunks;
  }

  /** The usage-only chunk (stream_options.include_usage). */
  usageChunk(done: DoneEvent): Record<string, unknown> {
    return { ...this.envelope(true), choices: [], usage: this.usage(done) };
  }

  /** The whole (non-streamed) response. */
  response(done: DoneEvent): Record<string, unknown> {
    this.text += done.text;
    const logprobs = this.req.logprobs ? this.logprobsOf(this.tokens, 0) : null;
    if (this.req.endpoint !== "chat") {
      const choice = {
        index: this.index,
        text: this.text,
        logprobs,
        finish_reason: finishReason(done),
      };
      return { ...this.envelope(false), choices: [choice], usage: usage(done) };
    }
    const message: Record<string, unknown> = { role: "assistant", content: this.text };
    if (this.parser || this.req.splitReasoning) {
      this.decide(this.split(done.text, true).content, true);
      // Text around calls is what the model said besides them; only calls (or only
      // reasoning): content is null, as vLLM answers.
      message.content = this.calls.length
        ? (this.content.trim() || null)
        : this.reasoning && !this.content
        ? null
        : this.content;
      if (this.reasoning) message.reasoning_content = this.reasoning;
      if (this.calls.length) message.tool_calls = this.calls;
    }
    message.refusal = null;
    const choice = {
      index: this.index,
      message,
      logprobs,
      finish_reason: this.finishReason(done),
    };
    return { ...this.envelope(false), choices: [choice], usage: this.usage(done) };
  }

  /**
   * Split `text` into reasoning and content when the request asks for it (`last`: the end of
   * the output, where held-back text is decided); without a split all of it is content.
   */
  private split(text: string, last: boolean): { reasoning: string; content: string } {
    if (!this.req.splitReasoning) return { reasoning: "", content: text };
    this.splitter ??= new ReasoningSplitter(this.reasoningOpen);
    const a = this.splitter.push(text);
    const b = last ? this.splitter.finish() : { reasoning: "", content: "" };
    const reasoning = a.reasoning + b.reasoning;
    this.reasoning += reasoning;
    return { reasoning, content: a.content + b.content };
  }

  /** A chunk's delta of reasoning and content (content left out when only reasoning came). */
  private delta(reasoning: string, content: string): ChunkDelta {
    return reasoning
      ? { reasoning_content: reasoning, content: content || undefined }
      : { content };
  }

  /**
   * Content through the tool-call parser when tools are in play (`last`: the output ended);
   * records the content let through and the calls (with ids).
   */
  private decide(content: string, last = false): { text: string; calls: ResponseToolCall[] } {
    if (!this.parser) {
      this.content += content;
      return { text: content, calls: [] };
    }
    const pieces: ParsedPiece[] = [
      ...this.parser.push(content),
      ...(last ? this.parser.finish() : []),
    ];
    let text = "";
    const calls: ResponseToolCall[] = [];
    for (const p of pieces) {
      if (p.kind === "content") {
        text += p.text;
        continue;
      }
      const call: ResponseToolCall = {
        id: toolCallId(this.toolFormat!, p.call.id),
        type: "function",
        function: { name: p.call.name, arguments: p.call.arguments },
      };
      calls.push(call);
    }
    this.content += text;
    this.calls.push(...calls);
    return { text, calls };
  }

  /**
   * A call as stream chunks, as OpenAI sends one: its index, id and name (arguments ""), then
   * its arguments. The call comes out once its JSON is complete, so the arguments come whole.
   */
  private callChunks(call: ResponseToolCall): Record<string, unknown>[] {
    const index = this.calls.indexOf(call);
    return [
      this.chunk(
        {
          tool_calls: [{
            index,
            id: call.id,
            type: "function",
            function: { name: call.function.name, arguments: "" },
          }],
        },
        null,
        null,
      ),
      this.chunk(
        { tool_calls: [{ index, function: { arguments: call.function.arguments } }] },
        null,
        null,
      ),
    ];
  }

  /** finish_reason: "tool_calls" when the model stopped after calling tools. */
  private finishReason(done: DoneEvent): string {
    return this.calls.length && done.finishReason === "stop" ? "tool_calls" : finishReason(done);
  }

  /** Fields every response and chunk carries. */
  private envelope(chunk: boolean): Record<string, unknown> {
    return {
      id: this.id,
      object: this.req.endpoint === "chat"
        ? (chunk ? "chat.completion.chunk" : "chat.completion")
        : "text_completion",
      created: this.created,
      model: this.model,
      system_fingerprint: null,
    };
  }

  /**
   * One stream chunk: a chat delta (`content` is left out when empty on a last chunk), or a
   * completion's text; `finish` and `logprobs`.
   */
  private chunk(
    delta: ChunkDelta,
    finish: string | null,
    logprobs: unknown,
  ): Record<string, unknown> {
    let choice: Record<string, unknown>;
    if (this.req.endpoint === "chat") {
      const d: Record<string, unknown> = {};
      if (!this.sentRole) {
        d.role = "assistant";
        this.sentRole = true;
      }
      if (delta.reasoning_content) d.reasoning_content = delta.reasoning_content;
      if (delta.content !== undefined && (delta.content || finish === null)) {
        d.content = delta.content;
      }
      if (delta.tool_calls) d.tool_calls = delta.tool_calls;
      choice = { index: this.index, delta: d, logprobs, finish_reason: finish };
    } else {
      choice = { index: this.index, text: delta.content ?? "", logprobs, finish_reason: finish };
    }
    // With stream_options.include_usage every chunk carries `usage`, null until the last one
    // (as OpenAI documents and sends).
    return {
      ...this.envelope(true),
      choices: [choice],
      ...(this.req.includeUsage ? { usage: null } : {}),
    };
  }

  /**
   * OpenAI's usage object; with a reasoning split, `completion_tokens_details.reasoning_tokens`
   * counts the tokens whose text lies in the think block (its tags included).
   */
  private usage(done: DoneEvent): Record<string, unknown> {
    const u: Record<string, unknown> = usage(done);
    const span = this.splitter?.span();
    if (!this.req.splitReasoning) return u;
    let n = 0;
    if (span) {
      let at = 0;
      for (const t of this.tokens) {
        const end = at + t.text.length;
        // A token with no text of its own (part of a character, the end token) counts where
        // it stands.
        if (end > at ? at < span[1] && end > span[0] : at >= span[0] && at < span[1]) n++;
        at = end;
      }
    }
    return { ...u, completion_tokens_details: { reasoning_tokens: n } };
  }

  /** Logprobs of `tokens` in this endpoint's format; `offset` is the first one's text offset. */
  private logprobsOf(tokens: TokenEvent[], offset: number): Record<string, unknown> {
    if (this.req.endpoint === "chat") {
      return { content: tokens.map((t) => chatLogprob(t.token, t.top)), refusal: null };
    }
    const textOffset: number[] = [];
    let at = offset;
    for (const t of tokens) {
      textOffset.push(at);
      at += t.text.length;
    }
    return {
      tokens: tokens.map((t) => t.token.text),
      token_logprobs: tokens.map((t) => t.token.logprob),
      top_logprobs: tokens.map((t) => Object.fromEntries(t.top.map((c) => [c.text, c.logprob]))),
      text_offset: textOffset,
    };
  }
}

/**
 * OpenAI's finish_reason of a finished generation. A generation cancelled on the cluster (cluster
 * cancel, shutdown past its grace) says "cancelled" (as vLLM says "abort"): a cut-off text must
 * never read as complete.
 */
function finishReason(done: DoneEvent): string {
  return done.finishReason;
}

function usage(done: DoneEvent) {
  return {
    prompt_tokens: done.promptTokens,
    completion_tokens: done.completionTokens,
    total_tokens: done.promptTokens + done.completionTokens,
    // OpenAI's prompt caching report: prompt tokens whose KV came from the prefix cache.
    prompt_tokens_details: { cached_tokens: done.cachedTokens ?? 0 },
  };
}
