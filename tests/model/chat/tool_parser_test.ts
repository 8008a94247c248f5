/**
 * Tool calls found in model output (model/chat/tool_parser.ts), per format: several calls, text
 * around them, malformed or cut-off JSON given back as content, JSON answers that are not calls;
 * and the streaming parser deciding the same whatever way the output is split, holding back a
 * marker's start until it is decided.
 */
import {
  type ParsedPiece,
  parseToolOutput,
  ToolCallParser,
  type ToolCallParserOptions,
  type ToolFormat,
} from "../../../model/chat/mod.ts";
import { assert, assertEquals } from "../../support/assert.ts";

const TOOLS = [{ name: "get_weather" }, { name: "now" }];
const opts = (format: ToolFormat, extra: Partial<ToolCallParserOptions> = {}) => ({
  format,
  tools: TOOLS,
  ...extra,
});
const PARIS = { name: "get_weather", arguments: '{"city":"Paris"}' };
const NOW = { name: "now", arguments: "{}" };

/** [format, output, content, calls, options] */
const CASES: [ToolFormat, string, string, object[], Partial<ToolCallParserOptions>?][] = [
  // Hermes / Qwen: blocks anywhere, text around them is content.
  [
    "hermes",
    'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n' +
    '</tool_call>\n<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>',
    "Let me check.\n",
    [PARIS, NOW],
  ],
  // No closing tag before the end of the turn: the call stands. Arguments as JSON text too.
  ["hermes", '<tool_call>{"name": "now", "arguments": "{}"}', "", [NOW]],
  // Markers name any function: the client learns its model called an unknown one.
  ["hermes", '<tool_call>{"name": "later", "arguments": {}}</tool_call>', "", [{
    name: "later",
    arguments: "{}",
  }]],
  // Malformed: returned as the content it was, and nothing after it is parsed.
  [
    "hermes",
    '<tool_call>\n{"name": get_weather}\n</tool_call> <tool_call>{"name": "now"}</tool_call>',
    '<tool_call>\n{"name": get_weather}\n</tool_call> <tool_call>{"name": "now"}</tool_call>',
    [],
  ],
  // Cut off by max_tokens.
  [
    "hermes",
    'Sure <tool_call>\n{"name": "get_weather", "arguments": {"city": "Par',
    'Sure <tool_call>\n{"name": "get_weather", "arguments": {"city": "Par',
    [],
  ],
  [
    "hermes",
    '<tool_call>\n{"arguments": {}}\n</tool_call>',
    '<tool_call>\n{"arguments": {}}\n</tool_call>',
    [],
  ],
  ["hermes", "Just text, a < sign and <tool", "Just text, a < sign and <tool", []],
  [
    "hermes",
    '<tool_call>{"name": "now", "arguments": {}}</tool_call>\n<tool>',
    "\n<tool>",
    [NOW],
  ],
  // Llama 3.x: the reply is the call; <|python_tag|> may lead; "; " separates calls.
  ["llama3", '{"name": "get_weather", "parameters": {"city": "Paris"}}', "", [PARIS]],
  [
    "llama3",
    '<|python_tag|>{"name": "now", "parameters": {}}; {"name": "get_weather", "parameters": ' +
    '{"city": "Paris"}}',
    "",
    [NOW, PARIS],
  ],
  // A JSON answer that names no tool is an answer; text first means no call.
  ["llama3", '{"name": "Bob", "parameters": {}}', '{"name": "Bob", "parameters": {}}', []],
  [
    "llama3",
    '  Hi {"name": "now", "parameters": {}}',
    '  Hi {"name": "now", "parameters": {}}',
    [],
  ],
  [
    "llama3",
    '<|python_tag|>brave_search.call(query="x")',
    '<|python_tag|>brave_search.call(query="x")',
    [],
  ],
  ["llama3", '{"name": "now", "parameters": {}} and then', "and then", [NOW]],
  // Mistral Nemo: a JSON array after [TOOL_CALLS], ids kept.
  [
    "mistral",
    'Sure.[TOOL_CALLS][{"name": "now", "arguments": {}, "id": "abcDEF123"}, ' +
    '{"name": "get_weather", "arguments": {"city": "Paris"}}]',
    "Sure.",
    [{ ...NOW, id: "abcDEF123" }, PARIS],
  ],
  ["mistral", "[TOOL_CALLS][]", "[TOOL_CALLS][]", []],
  // Generic: the whole reply is {"tool_calls": [...]}.
  [
    "generic",
    '\n{"tool_calls": [{"name": "now", "arguments": {}}, {"name": "get_weather", ' +
    '"arguments": {"city": "Paris"}}]}',
    "",
    [NOW, PARIS],
  ],
  ["generic", '{"answer": 42}', '{"answer": 42}', []],
  ["generic", "plain text {", "plain text {", []],
  ["generic", "   ", "   ", []],
  // Forced: the opener was in the prompt, the output is the call object.
  ["hermes", '{"name": "now", "arguments": {}}', "", [NOW], { forced: true }],
  ["mistral", '{"name": "now", "arguments": {}}', "", [NOW], { forced: true }],
  ["hermes", '{"name": "now", "argu', '{"name": "now", "argu', [], { forced: true }],
  // parallel_tool_calls: false keeps the first call.
  [
    "hermes",
    '<tool_call>{"name": "now", "arguments": {}}</tool_call><tool_call>{"name": "get_weather", ' +
    '"arguments": {"city": "Paris"}}</tool_call>',
    "",
    [NOW],
    { maxCalls: 1 },
  ],
];

Deno.test("each format: calls, text around them, malformed and non-call JSON as content", () => {
  for (const [format, text, content, calls, extra] of CASES) {
    assertEquals(
      parseToolOutput(text, opts(format, extra)),
      { content, calls },
      `${format}: ${text}`,
    );
  }
});

/** The pieces of `chunks` pushed one by one, adjacent content joined. */
function streamed(chunks: string[], o: ToolCallParserOptions): ParsedPiece[] {
  const p = new ToolCallParser(o);
  const out: ParsedPiece[] = [];
  for (const piece of [...chunks.flatMap((c) => p.push(c)), ...p.finish()]) {
    const last = out.at(-1);
    if (piece.kind === "content" && last?.kind === "content") last.text += piece.text;
    else out.push(piece.kind === "content" ? { ...piece } : piece);
  }
  return out;
}

Deno.test("streamed in any split (markers cut across chunks), the same pieces come out", () => {
  for (const [format, text, , , extra] of CASES) {
    const o = opts(format, extra);
    const whole = streamed([text], o);
    assertEquals(streamed([...text], o), whole, `one character at a time: ${text}`);
    for (let i = 1; i < text.length; i++) {
      for (const j of [i + 1, i + 7]) {
        if (j >= text.length) continue;
        const chunks = [text.slice(0, i), text.slice(i, j), text.slice(j)];
        assertEquals(streamed(chunks, o), whole, `split at ${i}, ${j}: ${text}`);
      }
    }
  }
});

Deno.test("text streams at once; only what may start a call is held back until decided", () => {
  const p = new ToolCallParser(opts("hermes"));
  assertEquals(p.push("Hello <tool"), [{ kind: "content", text: "Hello " }]);
  assertEquals(p.push("bar> x"), [{ kind: "content", text: "<toolbar> x" }]);
  assertEquals(p.push("<tool_call>"), []);
  assertEquals(p.push('{"name": "now", '), []);
  assertEquals(p.push('"arguments": {}}'), [{ kind: "call", call: NOW }]);
  assertEquals(p.push("\n</tool_"), []);
  assertEquals(p.push("call>Done"), [{ kind: "content", text: "Done" }]);
  assertEquals(p.finish(), []);
  assertEquals(p.calls, 1);

  // Markerless: plain text is let through as soon as its first character says it is no call.
  const l = new ToolCallParser(opts("llama3"));
  assertEquals(l.push("  "), []);
  assertEquals(l.push("<|py"), []);
  assertEquals(l.push("x"), [{ kind: "content", text: "  <|pyx" }]);
  assertEquals(l.push(" more"), [{ kind: "content", text: " more" }]);
  const g = new ToolCallParser(opts("generic"));
  assertEquals(g.push("Sunny."), [{ kind: "content", text: "Sunny." }]);
});

Deno.test("a runaway call is bounded: nesting past the limit is content, not a stack", () => {
  const deep = "<tool_call>" + "[".repeat(10_000);
  const r = parseToolOutput(deep, opts("hermes"));
  assertEquals(r.calls, []);
  assertEquals(r.content, deep);
  assert(r.content.length === deep.length);
});
