/**
 * Tool calling in chat templates (model/chat/tools.ts): the format each real template gets
 * (texts in templates/, README there says where they come from), tools and calls rendered as
 * transformers passes them, the generic system prompt for templates without tools, the forced
 * call's opener and JSON shape, and the bounds on tools.
 */
import {
  ChatTemplate,
  checkTools,
  detectToolFormat,
  FALLBACK_TEMPLATE,
  forcedToolCall,
  MAX_TOOLS,
  parseToolArguments,
  type ToolDef,
  ToolSpecError,
} from "../../../model/chat/mod.ts";
import { initialState, isComplete, step } from "../../../model/constrain/json.ts";
import type { SchemaNode } from "../../../model/constrain/mod.ts";
import { assert, assertEquals, assertThrows } from "../../support/assert.ts";

const template = (name: string) =>
  Deno.readTextFileSync(new URL(`./templates/${name}.jinja`, import.meta.url));
const chatOf = (name: string) => new ChatTemplate(template(name), "<s>", "</s>", true, false);

const WEATHER: ToolDef = {
  name: "get_weather",
  description: "Current weather",
  parameters: {
    type: "object",
    properties: { city: { type: "string" } },
    required: ["city"],
  },
};

/** A turn that called get_weather, its result, as the API hands them to the template. */
const HISTORY = [
  { role: "user", content: "Weather in Paris?" },
  {
    role: "assistant",
    content: "",
    toolCalls: [{
      id: "abcDEF123",
      name: "get_weather",
      arguments: parseToolArguments('{"city": "Paris"}', "arguments"),
    }],
  },
  { role: "tool", content: '{"temp": 20}', toolCallId: "abcDEF123", name: "get_weather" },
];

Deno.test("each real template gets its tool format; other templates and none get generic", () => {
  assertEquals(detectToolFormat(template("qwen2.5")), "hermes");
  assertEquals(detectToolFormat(template("qwen3")), "hermes");
  assertEquals(detectToolFormat(template("llama-3.1")), "llama3");
  assertEquals(detectToolFormat(template("mistral-nemo")), "mistral");
  assertEquals(detectToolFormat(template("gemma-3")), "generic");
  assertEquals(detectToolFormat(template("phi-3.5-mini")), "generic");
  // The transcript fallback is not the model's: it never saw tools.
  assertEquals(detectToolFormat(FALLBACK_TEMPLATE, false), "generic");
  // XML inside <tool_call> (Qwen3-Coder) and Mistral's [ARGS] spelling are not these parsers'.
  assertEquals(detectToolFormat("<tool_call>\n<function=x>\n<parameter=y>"), "generic");
  assertEquals(detectToolFormat("[TOOL_CALLS]{{ name }}[ARGS]{{ args }}"), "generic");
  assertEquals(chatOf("qwen2.5").toolFormat, "hermes");
});

Deno.test("qwen2.5: tools in the system turn, calls as <tool_call> JSON, results as user turns", () => {
  const r = chatOf("qwen2.5").render(HISTORY, { tools: [WEATHER] });
  assertEquals(
    r.text,
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant." +
      "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n" +
      "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n" +
      '{"type": "function", "function": {"name": "get_weather", "description": "Current ' +
      'weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, ' +
      '"required": ["city"]}}}\n</tools>\n\nFor each function call, return a json object with ' +
      "function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n" +
      '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n' +
      "<|im_start|>user\nWeather in Paris?<|im_end|>\n" +
      // The arguments are an object to the template: JSON text would print as a quoted string.
      '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": ' +
      '"Paris"}}\n</tool_call><|im_end|>\n' +
      '<|im_start|>user\n<tool_response>\n{"temp": 20}\n</tool_response><|im_end|>\n' +
      "<|im_start|>assistant\n",
  );
  // Without tools the template is as it always rendered.
  const plain = chatOf("qwen2.5").render([{ role: "user", content: "Hi" }]);
  assertEquals(
    plain.text,
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful " +
      "assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
  );
});

Deno.test("qwen3: the same blocks, a system prompt before the tools", () => {
  const r = chatOf("qwen3").render([{ role: "system", content: "Be brief." }, ...HISTORY], {
    tools: [WEATHER],
  });
  assert(r.text.startsWith("<|im_start|>system\nBe brief.\n\n# Tools\n"), r.text);
  assert(r.text.includes('<tools>\n{"type": "function", "function": {"name": "get_weather"'));
  assert(
    r.text.includes(
      '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": ' +
        '"Paris"}}\n</tool_call><|im_end|>\n',
    ),
    r.text,
  );
  assert(r.text.endsWith("</tool_response><|im_end|>\n<|im_start|>assistant\n"), r.text);
});

Deno.test("llama 3.1: ipython environment, tools in the first user turn, calls with parameters", () => {
  const r = chatOf("llama-3.1").render([
    { role: "user", content: "Hi" },
    { role: "assistant", content: "Hello" },
    ...HISTORY,
  ], { tools: [WEATHER] });
  assertEquals(
    r.text,
    "<s><|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython\n" +
      "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>" +
      "<|start_header_id|>user<|end_header_id|>\n\nGiven the following functions, please " +
      "respond with a JSON for a function call with its proper arguments that best answers " +
      'the given prompt.\n\nRespond in the format {"name": function name, "parameters": ' +
      "dictionary of argument name and its value}.Do not use variables.\n\n" +
      JSON.stringify({ type: "function", function: WEATHER }, null, 4) + "\n\n" +
      "Hi<|eot_id|>" +
      // A turn without calls has no tool_calls key: the template tests `'tool_calls' in message`.
      "<|start_header_id|>assistant<|end_header_id|>\n\nHello<|eot_id|>" +
      "<|start_header_id|>user<|end_header_id|>\n\nWeather in Paris?<|eot_id|>" +
      "<|start_header_id|>assistant<|end_header_id|>\n\n" +
      '{"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|>' +
      '<|start_header_id|>ipython<|end_header_id|>\n\n"{\\"temp\\": 20}"<|eot_id|>' +
      "<|start_header_id|>assistant<|end_header_id|>\n\n",
  );
});

Deno.test("mistral nemo: [AVAILABLE_TOOLS] before the last user turn, [TOOL_CALLS] with ids", () => {
  const r = chatOf("mistral-nemo").render(HISTORY, { tools: [WEATHER] });
  assertEquals(
    r.text,
    '<s>[AVAILABLE_TOOLS][{"type": "function", "function": {"name": "get_weather", ' +
      '"description": "Current weather", "parameters": {"type": "object", "properties": ' +
      '{"city": {"type": "string"}}, "required": ["city"]}}}][/AVAILABLE_TOOLS]' +
      "[INST]Weather in Paris?[/INST]" +
      '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "abcDEF123"}]' +
      '</s>[TOOL_RESULTS]{"content": {"temp": 20}, "call_id": "abcDEF123"}[/TOOL_RESULTS]',
  );
});

Deno.test("generic: a system prompt lists the tools; calls and results become plain turns", () => {
  const chat = new ChatTemplate(FALLBACK_TEMPLATE, "<s>", "</s>", false, true);
  const r = chat.render([
    { role: "system", content: "Be brief." },
    ...HISTORY,
    { role: "tool", content: "sunny", toolCallId: "call_2" },
  ], { tools: [WEATHER] });
  assertEquals(
    r.text,
    "System: Be brief.\n\nYou can call these tools (each one's arguments are described by a " +
      "JSON Schema):\n" + JSON.stringify(WEATHER) + "\n\n" +
      "To call tools, reply with nothing but a JSON object of this shape:\n" +
      '{"tool_calls": [{"name": "<tool name>", "arguments": {"<argument>": <value>}}]}\n' +
      "Otherwise reply to the user as usual.\n" +
      "User: Weather in Paris?\n" +
      'Assistant: {"tool_calls":[{"name":"get_weather","arguments":{"city":"Paris"}}]}\n' +
      // Both results in one user turn (templates refuse a "tool" role or repeated users).
      'User: {"tool_results":[{"tool_call_id":"abcDEF123","name":"get_weather",' +
      '"content":"{\\"temp\\": 20}"},{"tool_call_id":"call_2","content":"sunny"}]}\n' +
      "Assistant:",
  );
  // No tools, no tool turns: the transcript is what it always was.
  assertEquals(
    chat.render([{ role: "user", content: "Hi" }], { tools: [] }).text,
    "User: Hi\nAssistant:",
  );
});

/** Whether `text` is accepted, complete, by the JSON shape `schema`. */
function accepts(schema: SchemaNode, text: string): boolean {
  let s = initialState(schema);
  for (const b of new TextEncoder().encode(text)) {
    const next = step(s, b);
    if (!next) return false;
    s = next;
  }
  return isComplete(s);
}

Deno.test("a forced call: the format's opener after the prompt, then one call object", () => {
  const now: ToolDef = { name: "now" };
  assertEquals(forcedToolCall("hermes", [WEATHER]).prefix, "<tool_call>\n");
  assertEquals(forcedToolCall("mistral", [WEATHER]).prefix, "[TOOL_CALLS][");
  assertEquals(forcedToolCall("llama3", [WEATHER]).prefix, "");
  assertEquals(forcedToolCall("generic", [WEATHER]).prefix, '{"tool_calls": [');
  // A named tool: its name, its own arguments schema.
  const named = forcedToolCall("hermes", [WEATHER, now], "get_weather").schema;
  assert(accepts(named, '{"name": "get_weather", "arguments": {"city": "Paris"}}'));
  assert(!accepts(named, '{"name": "now", "arguments": {}}'));
  assert(!accepts(named, '{"name": "get_weather", "arguments": {"town": "Paris"}}'));
  assert(!accepts(named, '{"name": "get_weather"}'));
  // Llama 3 was trained on "parameters".
  const llama = forcedToolCall("llama3", [WEATHER]).schema;
  assert(accepts(llama, '{"name": "get_weather", "parameters": {"city": "Paris"}}'));
  assert(!accepts(llama, '{"name": "get_weather", "arguments": {"city": "Paris"}}'));
  // Several: one of their names, arguments any object (no anyOf to tie them).
  const any = forcedToolCall("hermes", [WEATHER, now]).schema;
  assert(accepts(any, '{"name": "now", "arguments": {"x": [1]}}'));
  assert(!accepts(any, '{"name": "later", "arguments": {}}'));
  // A schema outside model/constrain's subset still forces a well-formed call.
  const odd = forcedToolCall("hermes", [{
    name: "find",
    parameters: { type: "object", properties: { q: { type: "string", pattern: "^a" } } },
  }]).schema;
  assert(accepts(odd, '{"name": "find", "arguments": {"q": "b"}}'));
});

Deno.test("tools are checked: shape, names, duplicates and bounds, naming the field", () => {
  const path = (raw: unknown) => {
    try {
      checkTools(raw);
    } catch (e) {
      assert(e instanceof ToolSpecError, String(e));
      return e.path;
    }
    return "";
  };
  const fn = (f: unknown) => ({ type: "function", function: f });
  assertEquals(path([fn({ name: "ok", parameters: { type: "object" } })]), "");
  assertEquals(path("x"), "tools");
  assertEquals(path([{ type: "retrieval" }]), "tools[0].type");
  assertEquals(path([fn("f")]), "tools[0].function");
  assertEquals(path([fn({ name: "a.b" })]), "tools[0].function.name");
  assertEquals(path([fn({ name: "x".repeat(65) })]), "tools[0].function.name");
  assertEquals(path([fn({ name: "a" }), fn({ name: "a" })]), "tools[1].function.name");
  assertEquals(path([fn({ name: "a", description: 5 })]), "tools[0].function.description");
  assertEquals(path([fn({ name: "a", parameters: [] })]), "tools[0].function.parameters");
  let deep: Record<string, unknown> = {};
  for (let i = 0; i < 40; i++) deep = { type: "object", properties: { x: deep } };
  assertEquals(path([fn({ name: "a", parameters: deep })]), "tools[0].function.parameters");
  const many = Array.from({ length: MAX_TOOLS + 1 }, (_, i) => fn({ name: `f${i}` }));
  assertEquals(path(many), "tools");
  assertEquals(path([fn({ name: "a", description: "d".repeat(300_000) })]), "tools");
  assertThrows(() => parseToolArguments("{oops", "args"), ToolSpecError, "args must be JSON");
  assertThrows(() => parseToolArguments(5, "args"), ToolSpecError, "args must be a string");
});
