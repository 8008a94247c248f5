/**
 * Tool calling on /v1/chat/completions (cluster/api/tools.ts, request.ts, response.ts): the
 * request checked field by field, the plan the generator receives (tools, a forced call's opener
 * and JSON shape), and the model's output turned into `message.tool_calls` / streamed
 * `delta.tool_calls` by the model's format, against a scripted generator.
 */
import OpenAI from "openai";
import {
  type GenerationEvent,
  type GenerationParams,
  parseRequest,
  startApiServer,
  type TextGenerator,
} from "../../../cluster/api/mod.ts";
import type { ApiError } from "../../../cluster/api/errors.ts";
import type { ToolFormat } from "../../../model/chat/mod.ts";
import { assert, assertEquals } from "../../support/assert.ts";

const WEATHER = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Current weather",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
} as const;
const NOW = { type: "function", function: { name: "now" } } as const;
const USER = [{ role: "user", content: "hi" }];

/** The 400's param of a chat body, or "" when it is accepted. */
function refusedParam(body: Record<string, unknown>): string {
  try {
    parseRequest("chat", { model: "m", messages: USER, ...body });
  } catch (e) {
    const err = e as ApiError;
    assertEquals(err.status, 400, err.message);
    return err.param ?? "(none)";
  }
  return "";
}

Deno.test("tools, tool_choice and parallel_tool_calls are checked, naming the field", () => {
  assertEquals(refusedParam({ tools: [WEATHER] }), "");
  assertEquals(refusedParam({ tools: [] }), "");
  assertEquals(refusedParam({ tools: {} }), "tools");
  assertEquals(refusedParam({ tools: [{ type: "function" }] }), "tools[0].function");
  assertEquals(
    refusedParam({ tools: [WEATHER, { type: "function", function: { name: "bad name" } }] }),
    "tools[1].function.name",
  );
  assertEquals(refusedParam({ tools: [WEATHER, WEATHER] }), "tools[1].function.name");
  const many = Array.from({ length: 129 }, (_, i) => ({
    type: "function",
    function: { name: `f${i}` },
  }));
  assertEquals(refusedParam({ tools: many }), "tools");
  for (
    const choice of ["none", "auto", "required", { type: "function", function: { name: "now" } }]
  ) {
    assertEquals(refusedParam({ tools: [WEATHER, NOW], tool_choice: choice }), "", String(choice));
  }
  assertEquals(refusedParam({ tools: [WEATHER], tool_choice: "sometimes" }), "tool_choice");
  assertEquals(
    refusedParam({
      tools: [WEATHER],
      tool_choice: { type: "function", function: { name: "now" } },
    }),
    "tool_choice",
  );
  assertEquals(refusedParam({ tool_choice: "required" }), "tool_choice");
  assertEquals(
    refusedParam({ tools: [WEATHER], parallel_tool_calls: "no" }),
    "parallel_tool_calls",
  );
  // The deprecated functions API is refused, not ignored.
  assertEquals(refusedParam({ functions: [WEATHER.function] }), "functions");
  assertEquals(refusedParam({ function_call: "auto" }), "function_call");
  // A JSON-held reply leaves no room for a call.
  const json = { type: "json_object" };
  assertEquals(refusedParam({ tools: [WEATHER], response_format: json }), "response_format");
  assertEquals(
    refusedParam({ tools: [WEATHER], tool_choice: "none", response_format: json }),
    "",
  );
});

Deno.test("tool turns are checked: assistant tool_calls, tool results' call ids", () => {
  const call = (extra: Record<string, unknown> = {}, fn: Record<string, unknown> = {}) => ({
    id: "call_1",
    type: "function",
    function: { name: "get_weather", arguments: '{"city": "Paris"}', ...fn },
    ...extra,
  });
  const turns = (assistant: Record<string, unknown>, tool: Record<string, unknown> = {}) =>
    refusedParam({
      messages: [
        ...USER,
        { role: "assistant", content: null, ...assistant },
        { role: "tool", tool_call_id: "call_1", content: "20C", ...tool },
      ],
    });
  assertEquals(turns({ tool_calls: [call()] }), "");
  const parsed = parseRequest("chat", {
    model: "m",
    messages: [...USER, { role: "assistant", content: null, tool_calls: [call()] }, {
      role: "tool",
      tool_call_id: "call_1",
      name: "get_weather",
      content: "20C",
    }],
  });
  assertEquals(parsed.params.messages!.slice(1), [
    {
      role: "assistant",
      content: "",
      toolCalls: [{ id: "call_1", name: "get_weather", arguments: { city: "Paris" } }],
    },
    { role: "tool", content: "20C", toolCallId: "call_1", name: "get_weather" },
  ]);
  assertEquals(turns({ tool_calls: "x" }), "messages[1].tool_calls");
  assertEquals(turns({ tool_calls: [call({ type: "code" })] }), "messages[1].tool_calls[0].type");
  assertEquals(turns({ tool_calls: [call({ id: 5 })] }), "messages[1].tool_calls[0].id");
  assertEquals(
    turns({ tool_calls: [call({}, { name: "" })] }),
    "messages[1].tool_calls[0].function.name",
  );
  assertEquals(
    turns({ tool_calls: [call({}, { arguments: "{city: Paris" })] }),
    "messages[1].tool_calls[0].function.arguments",
  );
  assertEquals(
    turns({ tool_calls: Array.from({ length: 129 }, () => call()) }),
    "messages[1].tool_calls",
  );
  assertEquals(turns({}, { tool_call_id: undefined }), "messages[2].tool_call_id");
  assertEquals(turns({}, { tool_call_id: "x".repeat(257) }), "messages[2].tool_call_id");
  assertEquals(
    refusedParam({ messages: [{ role: "user", content: "a", tool_calls: [call()] }] }),
    "messages[0].tool_calls",
  );
});

/** Streams scripted pieces; the last user turn picks the script. */
class ScriptedGenerator implements TextGenerator {
  last?: GenerationParams;
  constructor(public format: ToolFormat | undefined, readonly script: string[]) {}
  models() {
    return [{ id: "m.gguf", created: 1, contextLength: 4096, toolFormat: this.format }];
  }
  health() {
    return { status: "ok" };
  }
  features: { json?: boolean } = { json: true };
  async *generate(p: GenerationParams): AsyncIterable<GenerationEvent> {
    this.last = p;
    for (const [i, text] of this.script.entries()) {
      yield { kind: "token", text, token: { tokenId: i, text, logprob: -0.5 }, top: [] };
    }
    await Promise.resolve();
    yield { kind: "done", text: "", finishReason: "stop", promptTokens: 9, completionTokens: 3 };
  }
}

async function withServer(gen: TextGenerator, fn: (base: string, client: OpenAI) => Promise<void>) {
  const api = await startApiServer({ port: 0, generator: gen });
  const base = `http://127.0.0.1:${api.port}`;
  try {
    await fn(base, new OpenAI({ baseURL: `${base}/v1`, apiKey: "none", maxRetries: 0 }));
  } finally {
    await api.close();
  }
}

/** A Qwen-style reply: text, then two calls with their markers cut across tokens. */
const HERMES_REPLY = [
  "Let me look.\n<tool",
  '_call>\n{"name": "get_weather", ',
  '"arguments": {"city": "Paris"}}\n</tool_call>\n<tool_call>\n{"name": "now", "arguments": {}}',
  "\n</tool_",
  "call>",
];

Deno.test("a reply with calls: message.tool_calls, text around them as content, tool_calls", async () => {
  const gen = new ScriptedGenerator("hermes", HERMES_REPLY);
  await withServer(gen, async (_, client) => {
    const r = await client.chat.completions.create({
      model: "m",
      messages: [{ role: "user", content: "Weather?" }],
      tools: [WEATHER, NOW],
    });
    // The generator got the tools to render, no forced call.
    assertEquals(gen.last!.tools!.map((t) => t.name), ["get_weather", "now"]);
    assertEquals(gen.last!.json, undefined);
    assertEquals(gen.last!.assistantPrefix, undefined);
    const choice = r.choices[0];
    assertEquals(choice.finish_reason, "tool_calls");
    assertEquals(choice.message.content, "Let me look.");
    const calls = choice.message.tool_calls!;
    assertEquals(calls.length, 2);
    for (const c of calls) {
      assert(/^call_[A-Za-z0-9]{24}$/.test(c.id), c.id);
      assertEquals(c.type, "function");
    }
    assert(calls[0].id !== calls[1].id);
    assertEquals(calls.map((c) => c.type === "function" ? c.function : null), [
      { name: "get_weather", arguments: '{"city":"Paris"}' },
      { name: "now", arguments: "{}" },
    ]);

    // parallel_tool_calls: false keeps the first.
    const one = await client.chat.completions.create({
      model: "m",
      messages: [{ role: "user", content: "Weather?" }],
      tools: [WEATHER, NOW],
      parallel_tool_calls: false,
    });
    assertEquals(one.choices[0].message.tool_calls!.length, 1);

    // tool_choice none: no tools rendered, the output is content as generated.
    const none = await client.chat.completions.create({
      model: "m",
      messages: [{ role: "user", content: "Weather?" }],
      tools: [WEATHER, NOW],
      tool_choice: "none",
    });
    assertEquals(gen.last!.tools, undefined);
    assertEquals(none.choices[0].message.content, HERMES_REPLY.join(""));
    assertEquals(none.choices[0].message.tool_calls, undefined);
    assertEquals(none.choices[0].finish_reason, "stop");
  });
});

Deno.test("a malformed call is content, finish_reason stop; a plain reply is unchanged", async () => {
  const bad = ['Sure <tool_call>\n{"name": "get_weather", ', '"arguments": {city}}</tool_call>'];
  await withServer(new ScriptedGenerator("hermes", bad), async (_, client) => {
    const r = await client.chat.completions.create({
      model: "m",
      messages: [{ role: "user", content: "Weather?" }],
      tools: [WEATHER],
    });
    assertEquals(r.choices[0].message.content, bad.join(""));
    assertEquals(r.choices[0].message.tool_calls, undefined);
    assertEquals(r.choices[0].finish_reason, "stop");
  });
  const plain = ["  Hello", " there\n"];
  await withServer(new ScriptedGenerator("llama3", plain), async (_, client) => {
    const r = await client.chat.completions.create({
      model: "m",
      messages: [{ role: "user", content: "Hi" }],
      tools: [WEATHER],
    });
    assertEquals(r.choices[0].message.content, "  Hello there\n");
  });
});

/** The SSE data objects of a streamed chat request. */
async function sse(base: string, body: Record<string, unknown>) {
  const r = await fetch(`${base}/v1/chat/completions`, {
    method: "POST",
    body: JSON.stringify({ model: "m", stream: true, ...body }),
  });
  assertEquals(r.status, 200);
  const text = await r.text();
  assert(text.trimEnd().endsWith("data: [DONE]"), text);
  return text.split("\n\n").filter((l) => l.startsWith("data: {")).map((l) =>
    JSON.parse(l.slice(6)) as {
      choices: { delta: Record<string, unknown>; finish_reason: string }[];
    }
  );
}

Deno.test("streamed: content as it comes, each call as index/id/name then arguments", async () => {
  await withServer(new ScriptedGenerator("hermes", HERMES_REPLY), async (base, client) => {
    const chunks = await sse(base, { messages: USER, tools: [WEATHER, NOW] });
    const deltas = chunks.map((c) => c.choices[0].delta);
    const content = deltas.map((d) => d.content ?? "").join("");
    // No marker, not even its start, reaches the client as text.
    assertEquals(content, "Let me look.\n");
    const calls = deltas.filter((d) => d.tool_calls).map((d) => (d.tool_calls as unknown[])[0]);
    assertEquals(calls.length, 4);
    const [a, b, c, d] = calls as Record<string, unknown>[];
    assert(typeof a.id === "string" && (a.id as string).startsWith("call_"));
    assertEquals(a, {
      index: 0,
      id: a.id,
      type: "function",
      function: { name: "get_weather", arguments: "" },
    });
    assertEquals(b, { index: 0, function: { arguments: '{"city":"Paris"}' } });
    assertEquals(c, {
      index: 1,
      id: c.id,
      type: "function",
      function: { name: "now", arguments: "" },
    });
    assertEquals(d, { index: 1, function: { arguments: "{}" } });
    assertEquals(chunks.at(-1)!.choices[0].finish_reason, "tool_calls");
    assertEquals(chunks.at(-1)!.choices[0].delta, {});
    assertEquals(chunks.filter((c) => c.choices[0].finish_reason).length, 1);

    // The official client's stream helper assembles the same calls.
    const stream = client.chat.completions.stream({
      model: "m",
      messages: [{ role: "user", content: "Weather?" }],
      tools: [WEATHER, NOW],
    });
    const final = await stream.finalChatCompletion();
    const message = final.choices[0].message;
    assertEquals(
      message.tool_calls!.map((c) => c.type === "function" ? c.function : null),
      [{ name: "get_weather", arguments: '{"city":"Paris"}' }, { name: "now", arguments: "{}" }],
    );
    assertEquals(final.choices[0].finish_reason, "tool_calls");
  });
});

Deno.test("tool_choice required or named: the call's opener after the prompt, sampling held to it", async () => {
  const reply = ['{"name": "get_weather", ', '"arguments": {"city": "Paris"}}'];
  const gen = new ScriptedGenerator("hermes", reply);
  await withServer(gen, async (base, client) => {
    const r = await client.chat.completions.create({
      model: "m",
      messages: [{ role: "user", content: "Weather?" }],
      tools: [WEATHER, NOW],
      tool_choice: { type: "function", function: { name: "get_weather" } },
    });
    assertEquals(gen.last!.assistantPrefix, "<tool_call>\n");
    const props = (gen.last!.json as { props: { name: string; schema: unknown }[] }).props;
    assertEquals(props.map((p) => p.name), ["name", "arguments"]);
    assertEquals(props[0].schema, { kind: "enum", values: ["get_weather"] });
    assertEquals(r.choices[0].finish_reason, "tool_calls");
    assertEquals(r.choices[0].message.content, null);
    const call = r.choices[0].message.tool_calls![0];
    assertEquals(call.type === "function" ? call.function : null, {
      name: "get_weather",
      arguments: '{"city":"Paris"}',
    });

    await client.chat.completions.create({
      model: "m",
      messages: [{ role: "user", content: "Weather?" }],
      tools: [WEATHER, NOW],
      tool_choice: "required",
    });
    const required = (gen.last!.json as { props: { schema: unknown }[] }).props;
    assertEquals(required[0].schema, { kind: "enum", values: ["get_weather", "now"] });

    const chunks = await sse(base, {
      messages: USER,
      tools: [WEATHER],
      tool_choice: "required",
    });
    const calls = chunks.flatMap((c) => (c.choices[0].delta.tool_calls as unknown[]) ?? []);
    assertEquals(calls.length, 2);
    assertEquals(chunks.at(-1)!.choices[0].finish_reason, "tool_calls");
  });
});

Deno.test("mistral: call ids of 9 letters and digits, as its template demands", async () => {
  const reply = [
    '[TOOL_CALLS][{"name": "now", "arguments": {}}, ',
    '{"name": "now", "arguments": {}, "id": "abcDEF123"}]',
  ];
  await withServer(new ScriptedGenerator("mistral", reply), async (_, client) => {
    const r = await client.chat.completions.create({
      model: "m",
      messages: [{ role: "user", content: "Time?" }],
      tools: [NOW],
    });
    const ids = r.choices[0].message.tool_calls!.map((c) => c.id);
    assert(/^[A-Za-z0-9]{9}$/.test(ids[0]), ids[0]);
    assertEquals(ids[1], "abcDEF123");
  });
});

Deno.test("a generator that cannot render tools refuses them (400 tools), not ignores them", async () => {
  const gen = new ScriptedGenerator(undefined, ["Hi"]);
  await withServer(gen, async (base) => {
    const post = (body: Record<string, unknown>) =>
      fetch(`${base}/v1/chat/completions`, {
        method: "POST",
        body: JSON.stringify({ model: "m", messages: USER, ...body }),
      });
    const r = await post({ tools: [WEATHER] });
    const body = await r.json();
    assertEquals(r.status, 400);
    assertEquals(body.error.param, "tools");
    // A forced call needs constrained sampling.
    gen.format = "hermes";
    gen.features = {};
    const forced = await post({ tools: [WEATHER], tool_choice: "required" });
    assertEquals(forced.status, 400);
    assertEquals((await forced.json()).error.param, "tool_choice");
    const auto = await post({ tools: [WEATHER] });
    assertEquals(auto.status, 200);
    await auto.body?.cancel();
    gen.format = undefined;
    // Declined tools need nothing from it.
    const ok = await post({ tools: [WEATHER], tool_choice: "none" });
    assertEquals(ok.status, 200);
    await ok.body?.cancel();
  });
});
