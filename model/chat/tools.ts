/**
 * Tool calling (OpenAI's function calling) as chat templates see it: the tools a request offers,
 * the calls an assistant turn made, which wire format a model's template uses for them, the
 * instructions given to a model whose template knows no tools, and the JSON shape that forces a
 * call when the client demands one.
 *
 * Formats, chosen from the template source as llama.cpp's common/chat.cpp does:
 * - `hermes`: Hermes 2/3, Qwen2.5, Qwen3, QwQ: `<tool_call>\n{"name": …, "arguments": {…}}\n</tool_call>`,
 *   one block per call;
 * - `llama3`: Llama 3.1/3.2/3.3: the reply is `{"name": …, "parameters": {…}}`, optionally after
 *   `<|python_tag|>`;
 * - `mistral`: Mistral Nemo: `[TOOL_CALLS][{"name": …, "arguments": {…}}, …]`;
 * - `generic`: every other template (and models without one). The template is not given the
 *   tools; a system prompt lists them and asks for `{"tool_calls": [{"name", "arguments"}]}` as
 *   the whole reply, as llama.cpp's generic format does.
 *
 * @module
 */
import {
  ANY_OBJECT,
  compileJsonSchema,
  JsonSchemaError,
  type SchemaNode,
} from "../constrain/mod.ts";

/** A function the model may call (OpenAI's `tools[i].function`). */
export interface ToolDef {
  /** `[A-Za-z0-9_-]{1,64}`, unique in the request. */
  name: string;
  /** What it does, for the model. */
  description?: string;
  /** JSON Schema of its arguments (an object), shown to the model as given. */
  parameters?: Record<string, unknown>;
}

/** A call an assistant turn made (in the history sent back with the tool's result). */
export interface ToolCallRecord {
  /** The id the tool's result refers to (`tool_call_id`). */
  id: string;
  /** The function called. */
  name: string;
  /** Its arguments, parsed from the JSON text OpenAI carries (templates print them as JSON). */
  arguments: unknown;
}

/** The wire format of a template's tool calls (see the module doc). */
export type ToolFormat = "hermes" | "llama3" | "mistral" | "generic";

/** What a client asked of the model with `tool_choice` ("none" renders no tools at all). */
export type ToolChoice = "auto" | "required" | { name: string };

/** Most tools one request may offer (OpenAI's bound). */
export const MAX_TOOLS = 128;
/** Most calls one assistant message of the history may hold. */
export const MAX_TOOL_CALLS = 128;
/** Most characters of the tools' JSON (names, descriptions, schemas) in one request. */
export const MAX_TOOLS_CHARS = 256 * 1024;
/** Deepest nesting of a tool's parameters schema or a call's arguments. */
export const MAX_TOOL_JSON_DEPTH = 32;
/** Longest tool call id accepted in a history. */
export const MAX_TOOL_CALL_ID_CHARS = 256;

/** A tool, call or tool result is malformed; `path` names the field (`tools[2].function.name`). */
export class ToolSpecError extends Error {
  /** Error name. */
  override name = "ToolSpecError";
  /** Bad input: RPC callers see INVALID_ARGUMENT (HTTP 400). */
  readonly rpcCode = "invalid_argument";
  /** @param path the offending field @param message what is wrong with it */
  constructor(readonly path: string, message: string) {
    super(message);
  }
}

const NAME = /^[A-Za-z0-9_-]{1,64}$/;

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);

/** Nesting depth of a JSON value (a scalar is 0). */
function depth(v: unknown): number {
  if (typeof v !== "object" || v === null) return 0;
  let d = 0;
  for (const x of Object.values(v)) d = Math.max(d, depth(x));
  return d + 1;
}

/**
 * OpenAI's `tools` array, checked: `[{type: "function", function: {name, description?,
 * parameters?}}]`, at most {@linkcode MAX_TOOLS}, names unique, the whole at most
 * {@linkcode MAX_TOOLS_CHARS} characters of JSON.
 *
 * @example
 * ```ts
 * const tools = checkTools([{ type: "function", function: { name: "now" } }]);
 * ```
 */
export function checkTools(raw: unknown): ToolDef[] {
  if (!Array.isArray(raw)) {
    throw new ToolSpecError("tools", 'tools must be an array of {type: "function", function}');
  }
  if (raw.length > MAX_TOOLS) {
    throw new ToolSpecError("tools", `at most ${MAX_TOOLS} tools per request (got ${raw.length})`);
  }
  const chars = JSON.stringify(raw).length;
  if (chars > MAX_TOOLS_CHARS) {
    throw new ToolSpecError(
      "tools",
      `tools hold ${chars} characters of JSON; at most ${MAX_TOOLS_CHARS} are accepted`,
    );
  }
  const seen = new Set<string>();
  return raw.map((t, i): ToolDef => {
    const at = `tools[${i}]`;
    if (!isObj(t) || t.type !== "function") {
      throw new ToolSpecError(
        `${at}.type`,
        `${at}.type must be "function" (got ${JSON.stringify(isObj(t) ? t.type : t)})`,
      );
    }
    const f = t.function;
    if (!isObj(f)) throw new ToolSpecError(`${at}.function`, `${at}.function must be an object`);
    if (typeof f.name !== "string" || !NAME.test(f.name)) {
      throw new ToolSpecError(
        `${at}.function.name`,
        `${at}.function.name must be 1 to 64 letters, digits, underscores or dashes ` +
          `(got ${JSON.stringify(typeof f.name === "string" ? f.name.slice(0, 80) : f.name)})`,
      );
    }
    if (seen.has(f.name)) {
      throw new ToolSpecError(`${at}.function.name`, `tool ${f.name} is defined twice`);
    }
    seen.add(f.name);
    const def: ToolDef = { name: f.name };
    if (f.description !== undefined && f.description !== null) {
      if (typeof f.description !== "string") {
        throw new ToolSpecError(`${at}.function.description`, "description must be a string");
      }
      def.description = f.description;
    }
    if (f.parameters !== undefined && f.parameters !== null) {
      if (!isObj(f.parameters)) {
        throw new ToolSpecError(
          `${at}.function.parameters`,
          `${at}.function.parameters must be a JSON Schema object`,
        );
      }
      if (depth(f.parameters) > MAX_TOOL_JSON_DEPTH) {
        throw new ToolSpecError(
          `${at}.function.parameters`,
          `${at}.function.parameters is nested deeper than ${MAX_TOOL_JSON_DEPTH} levels`,
        );
      }
      def.parameters = f.parameters;
    }
    return def;
  });
}

/**
 * A history call's `arguments`: OpenAI sends JSON text (an object is taken too); templates print
 * them with `tojson`, so they are parsed here, as llama.cpp does for such templates.
 */
export function parseToolArguments(raw: unknown, path: string): unknown {
  let v = raw;
  if (typeof raw === "string") {
    try {
      v = JSON.parse(raw);
    } catch (e) {
      throw new ToolSpecError(path, `${path} must be JSON text: ${(e as Error).message}`);
    }
  } else if (!isObj(raw)) {
    throw new ToolSpecError(path, `${path} must be a string of JSON (the call's arguments)`);
  }
  if (depth(v) > MAX_TOOL_JSON_DEPTH) {
    throw new ToolSpecError(path, `${path} is nested deeper than ${MAX_TOOL_JSON_DEPTH} levels`);
  }
  return v;
}

/** A history call's id, checked (a string of 1 to {@linkcode MAX_TOOL_CALL_ID_CHARS}). */
export function checkToolCallId(raw: unknown, path: string): string {
  if (typeof raw !== "string" || raw.length === 0 || raw.length > MAX_TOOL_CALL_ID_CHARS) {
    throw new ToolSpecError(
      path,
      `${path} must be a string of 1 to ${MAX_TOOL_CALL_ID_CHARS} characters (the call's id)`,
    );
  }
  return raw;
}

/**
 * The format of a template's tool calls, from its source (the module doc lists them); a
 * template that is not the model's own (the transcript fallback) is `generic`.
 */
export function detectToolFormat(source: string, fromModel = true): ToolFormat {
  if (!fromModel) return "generic";
  // Mistral Small 3.x / Devstral spell calls `[TOOL_CALLS]name[ARGS]{…}`: not this parser's.
  if (source.includes("[TOOL_CALLS]") && !source.includes("[ARGS]")) return "mistral";
  // Qwen3-Coder (`<function=…>`), GLM (`<arg_key>`) and MiniMax (`<invoke name=`) put XML, not
  // JSON, inside their <tool_call> blocks.
  if (
    source.includes("<tool_call>") &&
    !["<function=", "<arg_key>", "<invoke name="].some((m) => source.includes(m))
  ) return "hermes";
  if (source.includes("<|start_header_id|>") && source.includes("ipython")) return "llama3";
  return "generic";
}

/**
 * Texts of a format's markers: where the vocabulary has them as control tokens (Mistral's
 * `[TOOL_CALLS]`, Llama's `<|python_tag|>`), the head decodes them as text for the parser.
 */
export function toolMarkers(format: ToolFormat): string[] {
  switch (format) {
    case "hermes":
      return ["<tool_call>", "</tool_call>"];
    case "mistral":
      return ["[TOOL_CALLS]"];
    case "llama3":
      return ["<|python_tag|>"];
    case "generic":
      return [];
  }
}

/** The system prompt that describes `tools` to a model whose template knows none. */
export function genericToolPrompt(tools: readonly ToolDef[]): string {
  return "You can call these tools (each one's arguments are described by a JSON Schema):\n" +
    tools.map((t) => JSON.stringify(t)).join("\n") +
    "\n\nTo call tools, reply with nothing but a JSON object of this shape:\n" +
    '{"tool_calls": [{"name": "<tool name>", "arguments": {"<argument>": <value>}}]}\n' +
    "Otherwise reply to the user as usual.";
}

/**
 * The JSON key a format's calls hold their arguments under (Llama 3 was trained on
 * `parameters`).
 */
export function argumentsKey(format: ToolFormat): "arguments" | "parameters" {
  return format === "llama3" ? "parameters" : "arguments";
}

/** How a demanded call is forced: text after the assistant's turn opener, then a JSON shape. */
export interface ForcedCall {
  /** The format's call opener, appended to the rendered prompt (`<tool_call>\n`). */
  prefix: string;
  /** `{"name": <one of the tools>, "arguments": <its schema>}`, sampled under this shape. */
  schema: SchemaNode;
}

/**
 * The prompt suffix and JSON shape that make the model call a tool (`tool_choice` "required" or
 * a named function): the model's output is then exactly one call object. With one candidate the
 * arguments follow its parameters schema where model/constrain supports it (any JSON object
 * otherwise); with several, the name is one of theirs and the arguments any JSON object (the
 * constraint has no `anyOf` to tie each name to its own schema).
 *
 * @example
 * ```ts
 * const { prefix, schema } = forcedToolCall("hermes", tools, "get_weather");
 * ```
 */
export function forcedToolCall(
  format: ToolFormat,
  tools: readonly ToolDef[],
  only?: string,
): ForcedCall {
  const candidates = only === undefined ? tools : tools.filter((t) => t.name === only);
  if (candidates.length === 0) throw new ToolSpecError("tool_choice", "no tool to call");
  let args: SchemaNode = ANY_OBJECT;
  if (candidates.length === 1) {
    try {
      args = compileJsonSchema(candidates[0].parameters ?? { type: "object" });
    } catch (e) {
      // A schema beyond the supported subset still gets a well-formed call: any JSON object.
      if (!(e instanceof JsonSchemaError)) throw e;
    }
  }
  const schema: SchemaNode = {
    kind: "object",
    props: [
      {
        name: "name",
        schema: { kind: "enum", values: candidates.map((t) => t.name) },
        required: true,
      },
      { name: argumentsKey(format), schema: args, required: true },
    ],
  };
  const prefix = {
    hermes: "<tool_call>\n",
    mistral: "[TOOL_CALLS][",
    llama3: "",
    generic: '{"tool_calls": [',
  }[format];
  return { prefix, schema };
}
