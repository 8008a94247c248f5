/**
 * Reasoning on `/v1/chat/completions`, as llama.cpp's server takes it: `reasoning_format` says
 * whether a thinking model's `<think>…</think>` block is returned apart as `reasoning_content`,
 * and `chat_template_kwargs` passes variables to the chat template (`{"enable_thinking":
 * false}` makes Qwen3's write an empty think block). Both checked here (400 naming the field).
 *
 * @module
 */
import { checkTemplateKwargs, TemplateKwargsError } from "../../model/chat/mod.ts";
import { ApiError } from "./errors.ts";

/**
 * llama.cpp's names: "none" leaves the think block in `content`; "auto" and "deepseek" return it
 * as `reasoning_content` (streamed as `delta.reasoning_content`); "deepseek-legacy" does so
 * unstreamed only, a stream keeping it inline in `content`.
 */
export type ReasoningFormat = "none" | "auto" | "deepseek" | "deepseek-legacy";

const FORMATS: readonly ReasoningFormat[] = ["none", "auto", "deepseek", "deepseek-legacy"];

/** The reasoning fields of a request, checked. */
export interface ReasoningRequest {
  /** reasoning_format (default "auto"). */
  format: ReasoningFormat;
  /** chat_template_kwargs, when sent. */
  kwargs?: Record<string, unknown>;
}

type Obj = Record<string, unknown>;

const bad = (param: string, message: string) =>
  new ApiError(400, message, "invalid_request_error", "invalid_value", param);

/**
 * `reasoning_format` and `chat_template_kwargs` of a request body, checked; `chat`: the body
 * came to /v1/chat/completions (elsewhere both are refused).
 */
export function reasoningRequest(body: Obj, chat: boolean): ReasoningRequest {
  // Neither llama.cpp nor vLLM reads a top-level enable_thinking; taken silently it would be
  // ignored, so the client is told where it goes.
  if (body.enable_thinking !== undefined && body.enable_thinking !== null) {
    throw bad(
      "enable_thinking",
      "enable_thinking is a chat template variable: send it as chat_template_kwargs: " +
        '{"enable_thinking": …}',
    );
  }
  const format = body.reasoning_format;
  const kwargs = body.chat_template_kwargs;
  const given = (v: unknown) => v !== undefined && v !== null;
  if (!chat) {
    for (const [key, v] of [["reasoning_format", format], ["chat_template_kwargs", kwargs]]) {
      if (given(v)) throw bad(key as string, `${key} is for /v1/chat/completions only`);
    }
    return { format: "none" };
  }
  const out: ReasoningRequest = { format: "auto" };
  if (given(format)) {
    if (typeof format !== "string" || !FORMATS.includes(format as ReasoningFormat)) {
      throw bad(
        "reasoning_format",
        `reasoning_format must be one of ${FORMATS.join(", ")}, got ` +
          JSON.stringify(format).slice(0, 80),
      );
    }
    out.format = format as ReasoningFormat;
  }
  if (given(kwargs)) {
    try {
      out.kwargs = checkTemplateKwargs(kwargs, "chat_template_kwargs");
    } catch (e) {
      if (e instanceof TemplateKwargsError) throw bad(e.path, e.message);
      throw e;
    }
  }
  return out;
}

/**
 * Whether a chat's output is split into reasoning and content: the model's template is a
 * thinking one and the format asks for it (for this kind of answer).
 */
export function splitsReasoning(
  format: ReasoningFormat,
  stream: boolean,
  thinkingTemplate: boolean | undefined,
): boolean {
  if (!thinkingTemplate || format === "none") return false;
  return !(format === "deepseek-legacy" && stream);
}
