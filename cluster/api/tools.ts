/**
 * Tool calling on `/v1/chat/completions`: the request's `tools`, `tool_choice`,
 * `parallel_tool_calls` and the tool fields of its messages, checked (400 naming the field);
 * and the plan that, once the model's tool format is known, says how the prompt is rendered,
 * whether a call is forced (`required` / a named function: the format's call opener after the
 * prompt, then sampling held to the call's JSON shape) and how the output is parsed.
 *
 * @module
 */
import {
  type ChatMessage,
  checkToolCallId,
  checkTools,
  forcedToolCall,
  MAX_TOOL_CALLS,
  parseToolArguments,
  type ToolCallParserOptions,
  type ToolCallRecord,
  type ToolChoice,
  type ToolDef,
  type ToolFormat,
  ToolSpecError,
} from "../../model/chat/mod.ts";
import { ApiError } from "./errors.ts";
import type { GenerationParams } from "./generator.ts";

/** The tools part of a chat request, checked. */
export interface ToolRequest {
  /** The functions offered (empty when none). */
  tools: ToolDef[];
  /** "none": no tools are shown and nothing is parsed; else what the model may or must do. */
  choice: ToolChoice | "none";
  /** parallel_tool_calls (default true); false keeps only the first call. */
  parallel: boolean;
}

type Obj = Record<string, unknown>;

const bad = (param: string, message: string) =>
  new ApiError(400, message, "invalid_request_error", "invalid_value", param);

/** Run `fn`, turning a ToolSpecError into a 400 naming its field. */
function checked<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof ToolSpecError) throw bad(e.path, e.message);
    throw e;
  }
}

/**
 * The tool fields of message `i` added to `m`: an assistant's `tool_calls` (`[{id, type:
 * "function", function: {name, arguments}}]`), a tool result's `tool_call_id` (and `name`).
 */
export function messageToolFields(msg: Obj, i: number, m: ChatMessage): void {
  const at = `messages[${i}]`;
  if (msg.tool_calls !== undefined && msg.tool_calls !== null) {
    if (msg.role !== "assistant") {
      throw bad(`${at}.tool_calls`, `${at}.tool_calls is only allowed on assistant messages`);
    }
    const calls = msg.tool_calls;
    if (!Array.isArray(calls)) {
      throw bad(`${at}.tool_calls`, `${at}.tool_calls must be an array of calls`);
    }
    if (calls.length > MAX_TOOL_CALLS) {
      throw bad(`${at}.tool_calls`, `${at}.tool_calls holds at most ${MAX_TOOL_CALLS} calls`);
    }
    m.toolCalls = calls.map((c, j): ToolCallRecord => {
      const path = `${at}.tool_calls[${j}]`;
      const call = c as Obj;
      if (typeof call !== "object" || call === null || call.type !== "function") {
        throw bad(`${path}.type`, `${path}.type must be "function"`);
      }
      const f = call.function as Obj;
      if (typeof f !== "object" || f === null || typeof f.name !== "string" || !f.name) {
        throw bad(`${path}.function.name`, `${path}.function.name must be the function's name`);
      }
      if (f.name.length > 64) {
        throw bad(`${path}.function.name`, `${path}.function.name is longer than 64 characters`);
      }
      return checked(() => ({
        id: checkToolCallId(call.id, `${path}.id`),
        name: f.name as string,
        arguments: parseToolArguments(f.arguments, `${path}.function.arguments`),
      }));
    });
  }
  if (msg.role === "tool") {
    m.toolCallId = checked(() => checkToolCallId(msg.tool_call_id, `${at}.tool_call_id`));
    if (msg.name !== undefined && msg.name !== null) {
      if (typeof msg.name !== "string" || msg.name.length > 64) {
        throw bad(`${at}.name`, `${at}.name must be a string of at most 64 characters`);
      }
      m.name = msg.name;
    }
  }
}

/** `tools`, `tool_choice` and `parallel_tool_calls` of a chat request, checked. */
export function toolRequest(body: Obj): ToolRequest {
  if (body.functions !== undefined && body.functions !== null) {
    throw bad("functions", "functions (the deprecated API) is not supported; send tools instead");
  }
  if (body.function_call !== undefined && body.function_call !== null) {
    throw bad(
      "function_call",
      "function_call (the deprecated API) is not supported; send tool_choice instead",
    );
  }
  const raw = body.tools;
  const tools = raw === undefined || raw === null ? [] : checked(() => checkTools(raw));
  const parallel = body.parallel_tool_calls;
  if (parallel !== undefined && parallel !== null && typeof parallel !== "boolean") {
    throw bad(
      "parallel_tool_calls",
      `parallel_tool_calls must be true or false, got ${JSON.stringify(parallel)}`,
    );
  }
  const rawChoice = body.tool_choice;
  let choice: ToolChoice | "none";
  if (rawChoice === undefined || rawChoice === null) choice = tools.length ? "auto" : "none";
  else if (rawChoice === "none" || rawChoice === "auto" || rawChoice === "required") {
    choice = rawChoice;
  } else {
    const c = rawChoice as Obj;
    const f = c?.function as Obj | undefined;
    if (
      typeof c !== "object" || c === null || c.type !== "function" || typeof f !== "object" ||
      f === null || typeof f.name !== "string"
    ) {
      throw bad(
        "tool_choice",
        `tool_choice must be "none", "auto", "required" or {"type": "function", ` +
          `"function": {"name": …}}, got ${JSON.stringify(rawChoice).slice(0, 200)}`,
      );
    }
    choice = { name: f.name };
  }
  if (choice !== "none" && choice !== "auto" && tools.length === 0) {
    throw bad(
      "tool_choice",
      `tool_choice ${JSON.stringify(rawChoice)} needs tools; send the functions as tools`,
    );
  }
  if (
    typeof choice === "object" && !tools.some((t) => t.name === (choice as { name: string }).name)
  ) {
    throw bad(
      "tool_choice",
      `tool_choice names ${JSON.stringify(choice.name.slice(0, 80))}, which is not among the ` +
        `tools (${tools.map((t) => t.name).join(", ")})`,
    );
  }
  if (choice === "auto" && tools.length === 0) choice = "none";
  if (choice !== "none" && body.response_format !== undefined && body.response_format !== null) {
    const type = (body.response_format as Obj)?.type;
    if (type !== "text") {
      throw bad(
        "response_format",
        "response_format cannot hold the output to JSON while tools may be called: send " +
          'tool_choice "none" with it, or leave it out',
      );
    }
  }
  return { tools, choice, parallel: parallel !== false };
}

/**
 * Fit a chat request's tools to the model's tool `format` (undefined: the generator cannot
 * render tools): sets what the generator needs on `params` (the tools, and for a forced call
 * the opener and JSON shape) and returns how the output is to be parsed (undefined when tools
 * are not in play).
 */
export function planTools(
  req: ToolRequest,
  params: GenerationParams,
  format: ToolFormat | undefined,
): ToolCallParserOptions | undefined {
  if (req.choice === "none") return undefined;
  if (format === undefined) {
    throw new ApiError(
      400,
      "tools are not available from this agent (its generator does not render them); " +
        'leave tools out or send tool_choice "none"',
      "invalid_request_error",
      "invalid_value",
      "tools",
    );
  }
  params.tools = req.tools;
  const maxCalls = req.parallel ? undefined : 1;
  if (req.choice === "auto") return { format, tools: req.tools, maxCalls };
  const forced = forcedToolCall(
    format,
    req.tools,
    typeof req.choice === "object" ? req.choice.name : undefined,
  );
  params.assistantPrefix = forced.prefix;
  params.json = forced.schema;
  return { format, tools: req.tools, forced: true, maxCalls };
}

const ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

function randomAlnum(n: number): string {
  const bytes = crypto.getRandomValues(new Uint8Array(n));
  return [...bytes].map((b) => ALNUM[b % ALNUM.length]).join("");
}

/**
 * An id for a call the model made: OpenAI's `call_…`, except for Mistral, whose template
 * accepts only 9 letters and digits (the model's own id when it wrote one of that shape).
 */
export function toolCallId(format: ToolFormat, modelId?: string): string {
  if (format === "mistral") {
    return modelId && /^[A-Za-z0-9]{9}$/.test(modelId) ? modelId : randomAlnum(9);
  }
  return `call_${randomAlnum(24)}`;
}
