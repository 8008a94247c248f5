/**
 * The OpenAI request format: validate `/v1/completions` and `/v1/chat/completions` bodies into
 * GenerationParams (a 400 naming the offending `param` otherwise).
 *
 * @module
 */
import { MAX_STOP_CHARS, MAX_STOP_STRINGS } from "./stop.ts";
import { CHAT_ROLES, type ChatMessage, type ToolCallParserOptions } from "../../model/chat/mod.ts";
import { ANY_OBJECT, compileJsonSchema, JsonSchemaError } from "../../model/constrain/mod.ts";
import { ApiError } from "./errors.ts";
import { MAX_LOGIT_BIAS, topPOf } from "../../model/sampler.ts";
import type { GenerationParams } from "./generator.ts";
import { messageToolFields, type ToolRequest, toolRequest } from "./tools.ts";
import { type ReasoningFormat, reasoningRequest } from "./reasoning.ts";

/** Which endpoint a body was sent to. */
export type Endpoint = "chat" | "completion";

/** A validated request. */
export interface ParsedRequest {
  /** Where it was sent. */
  endpoint: Endpoint;
  /** What to generate. */
  params: GenerationParams;
  /** Answer as SSE chunks. */
  stream: boolean;
  /** stream_options.include_usage: a last chunk with usage and no choices. */
  includeUsage: boolean;
  /** Logprobs were asked for (chat: logprobs=true; completions: logprobs=k). */
  logprobs: boolean;
  /**
   * Completions with several prompts (strings or token-id lists): one generation per prompt,
   * answered as one choice each (`index` = the prompt's place); `params` holds the first.
   */
  batch?: GenerationParams[];
  /** Chat: the tools part of the request (tools.ts), checked. */
  tools?: ToolRequest;
  /**
   * Chat with tools in play: how the output is parsed into calls (set by planTools once the
   * model's tool format is known); absent, the output is content as generated.
   */
  toolParser?: ToolCallParserOptions;
  /** Chat: reasoning_format (reasoning.ts); "none" for completions. */
  reasoningFormat: ReasoningFormat;
  /**
   * Chat: the output is split into reasoning_content and content (set once the model is known
   * to have a thinking template, by splitsReasoning).
   */
  splitReasoning?: boolean;
}

/** Most prompts one completions request may carry. */
export const MAX_PROMPTS = 64;

type Obj = Record<string, unknown>;

const bad = (param: string, message: string) =>
  new ApiError(400, message, "invalid_request_error", "invalid_value", param);

/** `min`..`max` for an error message: exact where a float would print rounded (±2^63, 2^64). */
function range(min: number, max: number): string {
  const exact = (x: number) =>
    Math.abs(x) > Number.MAX_SAFE_INTEGER && Number.isInteger(Math.log2(Math.abs(x)))
      ? `${x < 0 ? "-" : ""}2^${Math.log2(Math.abs(x))}`
      : String(x);
  return `from ${exact(min)} to ${exact(max)}`;
}

function num(body: Obj, key: string, min: number, max: number, integer = false) {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v) || (integer && !Number.isInteger(v))) {
    // JSON.stringify writes a number too large for a double (1e309, parsed as Infinity) as null.
    const got = typeof v === "number" ? String(v) : JSON.stringify(v);
    throw bad(
      key,
      `${key} must be ${integer ? "an integer" : "a finite number"}, got ${got}`,
    );
  }
  if (v < min || v > max) throw bad(key, `${key} must be ${range(min, max)}, got ${v}`);
  return v;
}

function bool(body: Obj, key: string): boolean | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "boolean") {
    throw bad(key, `${key} must be true or false, got ${JSON.stringify(v)}`);
  }
  return v;
}

/** Message content: a string, or text parts (`[{type: "text", text}]`). */
function content(v: unknown, i: number): string {
  if (typeof v === "string") return v;
  if (v === null || v === undefined) return "";
  if (Array.isArray(v)) {
    return v.map((part, j) => {
      const p = part as Obj;
      if (p?.type !== "text") {
        throw bad(
          `messages[${i}].content[${j}]`,
          `only text content parts are supported (got type ${JSON.stringify(p?.type)})`,
        );
      }
      if (typeof p.text !== "string") {
        throw bad(
          `messages[${i}].content[${j}].text`,
          `a text content part needs its text as a string (got ${
            JSON.stringify(p.text) ?? "none"
          })`,
        );
      }
      return p.text;
    }).join("");
  }
  throw bad(`messages[${i}].content`, "content must be a string or an array of text parts");
}

/**
 * OpenAI fields that ask for output this server does not make: a 400 naming each, not an answer
 * without it (audio, a predicted-output diff, web search). Fields that change nothing in the
 * output (`user`, `store`, `metadata`, `service_tier`) are taken and unused, as llama.cpp does.
 */
function refuseUnserved(body: Obj): void {
  const modalities = body.modalities;
  if (modalities !== undefined && modalities !== null) {
    if (
      !Array.isArray(modalities) || modalities.length === 0 ||
      !modalities.every((m) => m === "text")
    ) {
      throw bad("modalities", 'modalities must be ["text"]: this server answers with text only');
    }
  }
  for (
    const [key, what] of [
      ["audio", "audio output"],
      ["prediction", "predicted outputs"],
      ["web_search_options", "web search"],
    ] as const
  ) {
    if (body[key] !== undefined && body[key] !== null) {
      throw bad(key, `${key} is not supported (this server makes no ${what})`);
    }
  }
}

/** Validate a request body (already JSON-parsed) for `endpoint`. */
export function parseRequest(endpoint: Endpoint, raw: unknown): ParsedRequest {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new ApiError(400, "the request body must be a JSON object");
  }
  const body = raw as Obj;
  if (typeof body.model !== "string" || body.model === "") {
    throw bad("model", "model is required: one of the ids GET /v1/models lists");
  }
  const n = num(body, "n", -Infinity, Infinity, true);
  if (n !== undefined && n !== 1) {
    throw bad("n", `n must be 1 (got ${n}): send one request per completion you want`);
  }
  refuseUnserved(body);
  const params: GenerationParams = { model: body.model };
  const reasoning = reasoningRequest(body, endpoint === "chat");
  if (reasoning.kwargs) params.chatTemplateKwargs = reasoning.kwargs;
  let prompts: (string | number[])[] | undefined;
  let tools: ToolRequest | undefined;
  if (endpoint === "chat") {
    if (!Array.isArray(body.messages) || body.messages.length === 0) {
      throw bad("messages", "messages must be a non-empty array of {role, content}");
    }
    params.messages = body.messages.map((m, i): ChatMessage => {
      const msg = m as Obj;
      if (typeof msg !== "object" || msg === null || typeof msg.role !== "string") {
        throw bad(`messages[${i}]`, `messages[${i}] must be an object with a string role`);
      }
      // OpenAI's roles only: any other string went into the chat template as a speaker.
      if (!CHAT_ROLES.includes(msg.role)) {
        throw bad(
          `messages[${i}].role`,
          `messages[${i}].role ${JSON.stringify(msg.role.slice(0, 64))} is not one of ` +
            CHAT_ROLES.join(", "),
        );
      }
      const turn: ChatMessage = { role: msg.role, content: content(msg.content, i) };
      messageToolFields(msg, i, turn);
      return turn;
    });
    tools = toolRequest(body);
  } else {
    // A string, token ids, or a list of either (one choice per prompt).
    const one = (prompt: unknown): string | number[] => {
      if (typeof prompt === "string") return prompt;
      if (
        Array.isArray(prompt) && prompt.length > 0 && prompt.every((t) => typeof t === "number")
      ) {
        if (!prompt.every((t) => Number.isInteger(t) && t >= 0 && t <= 2 ** 31 - 1)) {
          throw bad("prompt", "prompt token ids must be non-negative integers");
        }
        return prompt as number[];
      }
      throw bad(
        "prompt",
        "prompt must be a string, an array of token ids, or a list of strings or token-id arrays",
      );
    };
    const raw = body.prompt;
    const list = Array.isArray(raw) && raw.length > 0 && typeof raw[0] !== "number";
    prompts = list ? (raw as unknown[]).map(one) : [one(raw)];
    if (prompts.length > MAX_PROMPTS) {
      throw bad("prompt", `at most ${MAX_PROMPTS} prompts per request (got ${prompts.length})`);
    }
    setPrompt(params, prompts[0]);
    if (bool(body, "echo")) throw bad("echo", "echo is not supported");
    const suffix = body.suffix;
    if (suffix !== undefined && suffix !== null && typeof suffix !== "string") {
      throw bad("suffix", `suffix must be a string, got ${JSON.stringify(suffix)}`);
    }
    if (suffix) throw bad("suffix", "suffix is not supported");
    const bestOf = num(body, "best_of", 1, 128, true);
    if (bestOf !== undefined && bestOf !== 1) throw bad("best_of", "best_of must be 1");
  }
  // OpenAI's bound: a signed 32-bit count.
  // Both checked (a bad max_tokens beside max_completion_tokens passed), the newer one taken.
  const maxCompletion = num(body, "max_completion_tokens", 1, 2 ** 31 - 1, true);
  const maxTokensField = num(body, "max_tokens", 1, 2 ** 31 - 1, true);
  const maxTokens = maxCompletion ?? maxTokensField;
  responseFormat(body.response_format, params);
  // OpenAI's defaults: completions stop after 16 tokens, chat runs until the end.
  params.maxTokens = maxTokens ?? (endpoint === "completion" ? 16 : undefined);
  // Unset settings stay unset: the tail fills them from model/sampling_defaults.ts, the one set
  // of defaults every door uses (llama.cpp's, as llama-server applies to this API too).
  params.temperature = num(body, "temperature", 0, 2);
  const topP = num(body, "top_p", 0, 1);
  params.topP = topP === undefined ? undefined : topPOf(topP);
  // llama.cpp-style extensions.
  params.topK = num(body, "top_k", 0, 1 << 20, true);
  params.minP = num(body, "min_p", 0, 1);
  params.repeatPenalty = num(body, "repeat_penalty", 0.01, 100);
  params.presencePenalty = num(body, "presence_penalty", -2, 2);
  params.frequencyPenalty = num(body, "frequency_penalty", -2, 2);
  const bias = logitBias(body.logit_bias);
  if (bias) params.logitBias = bias;
  // A JSON number past 2^53 has already lost its low bits (the ones the RNG draws) when it is
  // parsed: 2^53 + 1 arrives as 2^53. Refused rather than silently run as another seed.
  const seed = num(body, "seed", -(2 ** 63), 2 ** 64, true);
  if (seed !== undefined && !Number.isSafeInteger(seed)) {
    throw bad(
      "seed",
      `seed ${seed} is past ±(2^53 − 1), where a JSON number no longer holds every integer ` +
        `(its low bits, which the sampler draws, are lost); use a smaller seed`,
    );
  }
  if (seed !== undefined) params.seed = BigInt.asUintN(64, BigInt(seed));
  const stop = body.stop;
  if (typeof stop === "string") params.stop = [stop];
  else if (Array.isArray(stop)) {
    if (stop.length > MAX_STOP_STRINGS || !stop.every((s) => typeof s === "string")) {
      throw bad("stop", `stop must be a string or an array of at most ${MAX_STOP_STRINGS} strings`);
    }
    params.stop = stop as string[];
  } else if (stop !== undefined && stop !== null) {
    throw bad("stop", `stop must be a string or an array of at most ${MAX_STOP_STRINGS} strings`);
  }
  if (params.stop?.some((s) => s.length > MAX_STOP_CHARS)) {
    throw bad("stop", `stop strings are at most ${MAX_STOP_CHARS} characters`);
  }
  // A lone surrogate matched half of an emoji, and the answer carried the other half: text no
  // strict JSON parser takes.
  if (params.stop?.some((s) => !s.isWellFormed())) {
    throw bad("stop", "stop strings must be well-formed Unicode (no lone surrogates)");
  }
  let logprobs = false;
  if (endpoint === "chat") {
    logprobs = bool(body, "logprobs") ?? false;
    const top = num(body, "top_logprobs", 0, 20, true);
    if (top !== undefined && !logprobs) {
      throw bad("top_logprobs", "top_logprobs needs logprobs: true");
    }
    if (logprobs) params.topLogprobs = top ?? 0;
  } else {
    const k = num(body, "logprobs", 0, 20, true);
    if (k !== undefined) {
      logprobs = true;
      params.topLogprobs = k;
    }
  }
  // Without logprobs in the request nothing reads them: the tail skips their softmax sum.
  params.logprobs = logprobs;
  const stream = bool(body, "stream") ?? false;
  const opts = body.stream_options as Obj | undefined | null;
  let includeUsage = false;
  if (opts !== undefined && opts !== null) {
    // As OpenAI: options of a stream that is not one are a mistake, not something to drop.
    if (!stream) throw bad("stream_options", "stream_options is only allowed with stream: true");
    if (typeof opts !== "object" || Array.isArray(opts)) {
      throw bad("stream_options", "stream_options must be an object like {include_usage: true}");
    }
    const usage = opts.include_usage;
    if (usage !== undefined && usage !== null && typeof usage !== "boolean") {
      throw bad(
        "stream_options.include_usage",
        `stream_options.include_usage must be true or false, got ${JSON.stringify(usage)}`,
      );
    }
    includeUsage = usage === true;
  }
  const parsed: ParsedRequest = {
    endpoint,
    params,
    stream,
    includeUsage,
    logprobs,
    reasoningFormat: reasoning.format,
  };
  if (tools) parsed.tools = tools;
  if (prompts && prompts.length > 1) {
    if (stream) {
      throw bad(
        "stream",
        "stream one prompt per request (several prompts are answered unstreamed)",
      );
    }
    parsed.batch = prompts.map((pr) => {
      const p: GenerationParams = { ...params, prompt: undefined, promptTokens: undefined };
      setPrompt(p, pr);
      return p;
    });
  }
  return parsed;
}

/**
 * `logit_bias` ({token id: bias in [-100, 100]}, at most 300), checked; undefined when absent or
 * empty. The tail adds each bias to its token's logit before the rest of the chain; an id past
 * the vocabulary is refused there (the head here does not know the vocabulary).
 */
function logitBias(raw: unknown): Record<number, number> | undefined {
  if (raw === undefined || raw === null) return undefined;
  if (typeof raw !== "object" || Array.isArray(raw)) {
    throw bad("logit_bias", "logit_bias must be an object mapping token ids to biases");
  }
  const entries = Object.entries(raw as Obj);
  if (entries.length > MAX_LOGIT_BIAS) {
    throw bad("logit_bias", `logit_bias holds at most ${MAX_LOGIT_BIAS} entries`);
  }
  for (const [id, bias] of entries) {
    // Token ids travel as uint32 (SamplerParams.logit_bias's keys).
    if (!/^(0|[1-9][0-9]{0,9})$/.test(id) || Number(id) > 0xffffffff) {
      throw bad("logit_bias", `logit_bias keys must be token ids, got ${JSON.stringify(id)}`);
    }
    if (typeof bias !== "number" || !(bias >= -100 && bias <= 100)) {
      throw bad(
        "logit_bias",
        `logit_bias values must be numbers from -100 to 100, got ${JSON.stringify(bias)}`,
      );
    }
  }
  return entries.length
    ? Object.fromEntries(entries.map(([id, bias]) => [Number(id), bias as number]))
    : undefined;
}

function setPrompt(p: GenerationParams, prompt: string | number[]): void {
  if (typeof prompt === "string") p.prompt = prompt;
  else p.promptTokens = prompt;
}

/**
 * `response_format`: "text" (free text), "json_object" (any JSON object), or "json_schema" (the
 * subset model/constrain/schema.ts documents); becomes `params.json`, the shape sampling is held
 * to. Anything else is a 400: ignoring it would hand free text to a client that parses JSON.
 */
function responseFormat(raw: unknown, params: GenerationParams): void {
  if (raw === undefined || raw === null) return;
  const format = raw as Obj;
  if (typeof format !== "object" || Array.isArray(format)) {
    throw bad("response_format", "response_format must be an object with a type");
  }
  switch (format.type) {
    case "text":
      return;
    case "json_object":
      params.json = ANY_OBJECT;
      return;
    case "json_schema": {
      const spec = format.json_schema as Obj | undefined;
      if (typeof spec !== "object" || spec === null || spec.schema === undefined) {
        throw bad(
          "response_format.json_schema",
          "response_format json_schema needs json_schema: {name, schema}",
        );
      }
      try {
        params.json = compileJsonSchema(spec.schema);
      } catch (e) {
        if (!(e instanceof JsonSchemaError)) throw e;
        throw bad(
          "response_format.json_schema.schema",
          `this schema is outside the supported subset: ${e.message}`,
        );
      }
      return;
    }
    default:
      throw bad(
        "response_format",
        `response_format type ${JSON.stringify(format.type)} is not supported ` +
          `(text, json_object, json_schema)`,
      );
  }
}
