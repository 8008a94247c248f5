/**
 * The one interface the HTTP layer needs from an agent: which models it serves, how it is doing,
 * and a stream of generation events for a request. The agent implements it over the same core
 * as InferenceService.Generate; tests can implement it with a fake. findModel reads a client's
 * model name against the served models as ModelInfo.matches says.
 *
 * @module
 */
import type { ChatMessage, ToolDef, ToolFormat } from "../../model/chat/mod.ts";
import type { SchemaNode } from "../../model/constrain/mod.ts";

/** A model as /v1/models lists it. */
export interface ModelInfo {
  /** The id clients send as `model` (the GGUF file name). */
  id: string;
  /** Unix seconds (when the agent loaded it). */
  created: number;
  /** Context positions per request. */
  contextLength: number;
  /**
   * Whether a client's name means this model (the agent's: the id, the file name, the name
   * without ".gguf"); absent: the id, or the id without ".gguf".
   */
  matches?: (name: string) => boolean;
  /**
   * How the model's chat template writes tool calls (model/chat/tools.ts); absent: the
   * generator cannot render tools, and a request offering them is refused.
   */
  toolFormat?: ToolFormat;
  /**
   * Its chat template is a thinking one (Qwen3, DeepSeek-R1, QwQ: it writes `<think>`): chat
   * output is split into reasoning_content and content (model/chat/reasoning.ts).
   */
  thinking?: boolean;
}

/** What to generate, in engine terms (the OpenAI layer has validated and converted it). */
export interface GenerationParams {
  /** Model id as the client sent it. */
  model: string;
  /** Raw prompt (completions); exactly one of prompt, promptTokens and messages. */
  prompt?: string;
  /** The prompt as token ids (completions), fed as given: no BOS added. */
  promptTokens?: number[];
  /** Conversation (chat completions), rendered with the model's chat template. */
  messages?: ChatMessage[];
  /** Tools offered to the model (chat), rendered by its template or a system prompt. */
  tools?: ToolDef[];
  /**
   * Text after the rendered chat's assistant turn opener, as if the model had written it (a
   * forced tool call's opener, `<tool_call>\n`); not part of the output.
   */
  assistantPrefix?: string;
  /** Extra chat template variables (`chat_template_kwargs`, checked), e.g. `enable_thinking`. */
  chatTemplateKwargs?: Record<string, unknown>;
  /** Most tokens to generate; undefined = until end of sequence or the context is full. */
  maxTokens?: number;
  /** 0 = greedy. */
  temperature?: number;
  /** Nucleus mass; 1 = off. */
  topP?: number;
  /** Keep the k most likely tokens; 0 = off. */
  topK?: number;
  /** Drop tokens below minP × the top probability; 0 = off. */
  minP?: number;
  /** llama.cpp's repetition penalty; 1 = off. */
  repeatPenalty?: number;
  /** Subtracted once from every token already generated. */
  presencePenalty?: number;
  /** Subtracted per occurrence of every token already generated. */
  frequencyPenalty?: number;
  /** Added to these token ids' logits before sampling (OpenAI's logit_bias). */
  logitBias?: Record<number, number>;
  /** RNG seed (uint64). */
  seed?: bigint;
  /** Stop strings, cut from the output. */
  stop?: string[];
  /** Report this many alternatives per token (0 = just the token's own logprob). */
  topLogprobs?: number;
  /**
   * Whether the caller reads log-probabilities (default true). False lets the tail skip the
   * softmax sum over the vocabulary that each token's own logprob needs (it is then NaN).
   */
  logprobs?: boolean;
  /**
   * Hold the output to this JSON shape (response_format json_object / json_schema): the
   * generator binds it to its vocabulary (model/constrain jsonConstraintFor) and samples with it.
   */
  json?: SchemaNode;
  /**
   * With json, for a thinking model whose think block is split off (reasoning_content): the
   * constraint starts after the block, so the model reasons before it answers.
   */
  jsonAfterReasoning?: boolean;
}

/** What a generator can do beyond plain text prompts; the API refuses (400) what it cannot. */
export interface GeneratorFeatures {
  /** Applies GenerationParams.json when sampling. */
  json?: boolean;
  /** Takes GenerationParams.promptTokens. */
  promptTokens?: boolean;
}

/** A candidate token with its log-probability. */
export interface TokenChoice {
  /** Vocabulary id. */
  tokenId: number;
  /** The token's own text (its piece, special tokens included). */
  text: string;
  /**
   * The piece's raw bytes, where they differ from the text's UTF-8 (a token holding part of a
   * character: its text has U+FFFD, OpenAI's `bytes` the real ones). Absent: the text's UTF-8.
   */
  bytes?: Uint8Array;
  /** Natural-log probability. */
  logprob: number;
}

/** One sampled token. */
export interface TokenEvent {
  /** Discriminant. */
  kind: "token";
  /** Text this token adds to the visible output (may be empty: held back or a partial UTF-8). */
  text: string;
  /** The sampled token. */
  token: TokenChoice;
  /** Most likely alternatives, when asked for. */
  top: TokenChoice[];
}

/** The end of a generation. */
export interface DoneEvent {
  /** Discriminant. */
  kind: "done";
  /** Last visible text (a flushed partial character or held-back text). */
  text: string;
  /** "stop": end of sequence or a stop string; "length": max_tokens or the context is full. */
  finishReason: "stop" | "length" | "cancelled";
  /** Prompt tokens after templating and tokenization. */
  promptTokens: number;
  /** Of those, how many a prefix cache supplied (not run); absent = 0. */
  cachedTokens?: number;
  /** Tokens generated. */
  completionTokens: number;
}

/**
 * What the prompt a chat was rendered into says about the output, sent before its first token
 * (a generator that sends none: nothing is known, the defaults hold).
 */
export interface PromptEvent {
  /** Discriminant. */
  kind: "prompt";
  /**
   * The prompt ends inside an open think block (the template's generation prompt wrote
   * `<think>`): the output starts as reasoning.
   */
  reasoningOpen: boolean;
}

/** What a generation streams: maybe a prompt event, then tokens, then one done event. */
export type GenerationEvent = PromptEvent | TokenEvent | DoneEvent;

/**
 * An agent as the HTTP API sees it.
 *
 * @example
 * ```ts
 * for await (const ev of generator.generate({ model: "m", prompt: "Hi" }, signal)) {
 *   if (ev.kind === "token") out += ev.text;
 * }
 * ```
 */
export interface TextGenerator {
  /** Models served. */
  models(): ModelInfo[];
  /** Optional features it supports (none when absent). */
  features?: GeneratorFeatures;
  /** Details for GET /health (slots, queue, placement). */
  health(): Record<string, unknown>;
  /**
   * Most generations it takes at once, running and waiting (an agent's --max-requests +
   * --queue-size); a batch of more prompts could never run (absent: no bound).
   */
  capacity?(): number;
  /**
   * Stream one generation; throws errors with `rpcCode`/`httpStatus` (see errors.ts). Calls
   * `onAccepted` once the request is checked and has a slot or a place in line: what it throws
   * after that no longer decides the status, so a stream may answer 200 before its first token.
   */
  generate(
    params: GenerationParams,
    signal: AbortSignal,
    onAccepted?: () => void,
  ): AsyncIterable<GenerationEvent>;
}

/** The served model a client's `name` means (its id, or an alias the model accepts). */
export function findModel(generator: TextGenerator, name: string): ModelInfo | undefined {
  return generator.models().find((m) =>
    m.matches ? m.matches(name) : m.id === name || m.id.replace(/\.gguf$/i, "") === name
  );
}
