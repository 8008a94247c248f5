/**
 * The OpenAI-compatible HTTP API: `/v1/models`, `/v1/completions`, `/v1/chat/completions`
 * (JSON or SSE), `/health`; admission control (bounded slots + queue → 429); stop strings across
 * token boundaries; tool calling (tools.ts); reasoning_content and chat_template_kwargs
 * (reasoning.ts); the TextGenerator interface an agent implements.
 *
 * @example
 * ```ts
 * import { startApiServer } from "./mod.ts";
 * const api = await startApiServer({ port: 8080, generator, apiKey: Deno.env.get("KEY") });
 * ```
 *
 * @module
 */
export { Admission, type AdmissionStats } from "./admission.ts";
export {
  ApiError,
  InvalidParamError,
  type OpenAIErrorBody,
  PromptTooLongError,
  QueueFullError,
  toApiError,
} from "./errors.ts";
export type {
  DoneEvent,
  GenerationEvent,
  GenerationParams,
  GeneratorFeatures,
  ModelInfo,
  PromptEvent,
  TextGenerator,
  TokenChoice,
  TokenEvent,
} from "./generator.ts";
export { type Endpoint, type ParsedRequest, parseRequest } from "./request.ts";
export { CompletionBuilder } from "./response.ts";
export {
  type ReasoningFormat,
  type ReasoningRequest,
  reasoningRequest,
  splitsReasoning,
} from "./reasoning.ts";
export {
  type ApiForward,
  type ApiServer,
  type ApiServerOptions,
  DEFAULT_HTTP_PORT,
  DEFAULT_MAX_BODY_BYTES,
  startApiServer,
} from "./server.ts";
export { MAX_STOP_CHARS, MAX_STOP_STRINGS, StopGate, StopMatcher } from "./stop.ts";
export { planTools, toolCallId, type ToolRequest, toolRequest } from "./tools.ts";
