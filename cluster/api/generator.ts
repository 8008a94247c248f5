/**
 * The one interface the HTTP layer needs from an agent: which models it serves, how it is doing,
 * and a stream of generation events for a request. The agent implements it over the same core
 * as InferenceService.Generate; tests can implement it with a fake.
 *
 * @module
 */
import type { ChatMessage } from "../../model/chat/mod.ts";

/** A model as /v1/models lists it. */
export interface ModelInfo {
  /** The id clients send as `model` (the GGUF file name). */
  id: string;
  /** Unix seconds (when the agent loaded it). */
  created: number;
  /** Context positions per request. */
  contextLength: number;
}

/** What to generate, in engine terms (the OpenAI layer has validated and converted it). */
export interface GenerationParams {
  /** Model id as the client sent it. */
  model: string;
  /** Raw prompt (completions); exactly one of prompt and messages. */
  prompt?: string;
  /** Conversation (chat completions), rendered with the model's chat template. */
  messages?: ChatMessage[];
  /** Most tokens to generate; undefined = until end of sequence or the context is full. */
  maxTokens?: number;
  temperature?: number;
  topP?: number;
  topK?: number;
  minP?: number;
  repeatPenalty?: number;
  presencePenalty?: number;
  frequencyPenalty?: number;
  /** RNG seed (uint64). */
  seed?: bigint;
  /** Stop strings, cut from the output. */
  stop?: string[];
  /** Report this many alternatives per token (0 = just the token's own logprob). */
  topLogprobs?: number;
}

/** A candidate token with its log-probability. */
export interface TokenChoice {
  tokenId: number;
  /** The token's own text (its piece, special tokens included). */
  text: string;
  logprob: number;
}

/** One sampled token. */
export interface TokenEvent {
  kind: "token";
  /** Text this token adds to the visible output (may be empty: held back or a partial UTF-8). */
  text: string;
  token: TokenChoice;
  /** Most likely alternatives, when asked for. */
  top: TokenChoice[];
}

/** The end of a generation. */
export interface DoneEvent {
  kind: "done";
  /** Last visible text (a flushed partial character or held-back text). */
  text: string;
  /** "stop": end of sequence or a stop string; "length": max_tokens or the context is full. */
  finishReason: "stop" | "length" | "cancelled";
  promptTokens: number;
  completionTokens: number;
}

/** What a generation streams. */
export type GenerationEvent = TokenEvent | DoneEvent;

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
  /** Details for GET /health (slots, queue, placement). */
  health(): Record<string, unknown>;
  /** Stream one generation; throws errors with `rpcCode`/`httpStatus` (see errors.ts). */
  generate(params: GenerationParams, signal: AbortSignal): AsyncIterable<GenerationEvent>;
}
