/**
 * Reasoning on /v1/chat/completions (cluster/api/reasoning.ts, response.ts): a thinking model's
 * `<think>` block returned as `message.reasoning_content` / `delta.reasoning_content`,
 * `reasoning_format`, `chat_template_kwargs` passed to the generator, tool calls after the
 * block, stop strings (cut by a StopGate as the head cuts them) across `</think>`, and the 400s,
 * against a scripted generator.
 */
import OpenAI from "openai";
import {
  type GenerationEvent,
  type GenerationParams,
  parseRequest,
  startApiServer,
  StopGate,
  type TextGenerator,
} from "../../../cluster/api/mod.ts";
import type { ApiError } from "../../../cluster/api/errors.ts";
import { assert, assertEquals } from "../../support/assert.ts";

/** Streams scripted tokens (through stop strings, as the head does), maybe after a prompt event. */
class ThinkingGenerator implements TextGenerator {
  last?: GenerationParams;
  reasoningOpen?: boolean;
  finish: "stop" | "length" = "stop";
  constructor(public script: string[], public thinking = true) {}
  models() {
    return [{
      id: "m.gguf",
      created: 1,
      contextLength: 4096,
      toolFormat: "hermes" as const,
      thinking: this.thinking,
    }];
  }
  health() {
    return { status: "ok" };
  }
  async *generate(p: GenerationParams): AsyncIterable<GenerationEvent> {
    this.last = p;
    if (this.reasoningOpen !== undefined) {
      yield { kind: "prompt", reasoningOpen: this.reasoningOpen };
    }
    const gate = new StopGate<number>(p.stop ?? []);
    let stopped = false;
    for (const [i, piece] of this.script.entries()) {
      const r = gate.push(i, piece);
      for (const { item, text } of r.out) {
        yield { kind: "token", text, token: { tokenId: item, text, logprob: -0.5 }, top: [] };
      }
      if ((stopped = r.stopped)) break;
    }
    const tail = stopped ? { out: [], tail: "" } : gate.finish("");
    for (const { item, text } of tail.out) {
      yield { kind: "token", text, token: { tokenId: item, text, logprob: -0.5 }, top: [] };
    }
    await Promise.resolve();
    yield {
      kind: "done",
      text: "",
      finishReason: stopped ? "stop" : this.finish,
      promptTokens: 9,
      completionTokens: this.script.length,
    };
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

const USER = [{ role: "user", content: "Hi" }];

/** The whole (unstreamed) answer's message and usage, from a raw POST (extra fields kept). */
async function post(base: string, body: Record<string, unknown>) {
  const r = await fetch(`${base}/v1/chat/completions`, {
    method: "POST",
    body: JSON.stringify({ model: "m", messages: USER, ...body }),
  });
  const json = await r.json();
  assertEquals(r.status, 200, JSON.stringify(json));
  return json as {
    choices: { message: Record<string, unknown>; finish_reason: string }[];
    usage: Record<string, unknown>;
  };
}

/** The SSE data objects of a streamed chat request. */
async function sse(base: string, body: Record<string, unknown>) {
  const r = await fetch(`${base}/v1/chat/completions`, {
    method: "POST",
    body: JSON.stringify({ model: "m", messages: USER, stream: true, ...body }),
  });
  assertEquals(r.status, 200);
  const text = await r.text();
  assert(text.trimEnd().endsWith("data: [DONE]"), text);
  return text.split("\n\n").filter((l) => l.startsWith("data: {")).map((l) =>
    JSON.parse(l.slice(6)) as {
      choices: {
        delta: Record<string, unknown>;
        finish_reason: string | null;
        logprobs: unknown;
      }[];
      usage?: Record<string, unknown>;
    }
  );
}

/** A stream's reasoning, content and finish_reason, joined. */
async function streamed(base: string, body: Record<string, unknown>) {
  const chunks = await sse(base, body);
  const deltas = chunks.flatMap((c) => c.choices.map((ch) => ch.delta));
  return {
    deltas,
    chunks,
    reasoning: deltas.map((d) => d.reasoning_content ?? "").join(""),
    content: deltas.map((d) => d.content ?? "").join(""),
    finish: chunks.flatMap((c) => c.choices).find((c) => c.finish_reason)?.finish_reason,
  };
}

// Qwen3's reply: the think tags are tokens of their own, "</think>" here split over two pieces.
const REPLY = ["<think>", "\nThe user", " greets.\n</th", "ink>", "\n\n", "Hello", "!"];

Deno.test("a thinking model: reasoning_content apart from content, streamed and not", async () => {
  const gen = new ThinkingGenerator(REPLY);
  await withServer(gen, async (base, client) => {
    const r = await client.chat.completions.create({ model: "m", messages: [USER[0] as never] });
    const message = r.choices[0].message as unknown as Record<string, unknown>;
    assertEquals(message.content, "Hello!");
    assertEquals(message.reasoning_content, "The user greets.");
    assertEquals(r.choices[0].finish_reason, "stop");
    // Tokens "<think>" to "ink>" (the tags included) are the reasoning's.
    assertEquals(r.usage!.completion_tokens_details, { reasoning_tokens: 4 });

    const s = await streamed(base, { stream_options: { include_usage: true } });
    assertEquals(s.reasoning, "The user greets.");
    assertEquals(s.content, "Hello!");
    // No part of a tag reaches the client, as reasoning or as content.
    for (const d of s.deltas) {
      assert(!/<\/?th/.test(`${d.reasoning_content ?? ""}${d.content ?? ""}`), JSON.stringify(d));
    }
    assertEquals(s.finish, "stop");
    assertEquals(s.chunks.at(-1)!.usage!.completion_tokens_details, { reasoning_tokens: 4 });
    // The official stream helper keeps the extra field on the deltas it hands out.
    const seen: string[] = [];
    const stream = client.chat.completions.stream({ model: "m", messages: [USER[0] as never] });
    stream.on("chunk", (c) => {
      const d = c.choices[0]?.delta as Record<string, unknown> | undefined;
      if (typeof d?.reasoning_content === "string") seen.push(d.reasoning_content);
    });
    const final = await stream.finalChatCompletion();
    assertEquals(final.choices[0].message.content, "Hello!");
    assertEquals(seen.join(""), "The user greets.");
  });
});

Deno.test("reasoning_format none keeps the block in content; a non-thinking model is untouched", async () => {
  await withServer(new ThinkingGenerator(REPLY), async (base) => {
    const r = await post(base, { reasoning_format: "none" });
    assertEquals(r.choices[0].message.content, REPLY.join(""));
    assertEquals(r.choices[0].message.reasoning_content, undefined);
    assertEquals(r.usage.completion_tokens_details, undefined);
    const s = await streamed(base, { reasoning_format: "none" });
    assertEquals(s.content, REPLY.join(""));
    assertEquals(s.reasoning, "");
    // deepseek-legacy: split unstreamed, inline in a stream (llama.cpp's meaning).
    assertEquals(
      (await post(base, { reasoning_format: "deepseek-legacy" })).choices[0].message.content,
      "Hello!",
    );
    assertEquals(
      (await streamed(base, { reasoning_format: "deepseek-legacy" })).content,
      REPLY.join(""),
    );
    assertEquals(
      (await post(base, { reasoning_format: "deepseek" })).choices[0].message.content,
      "Hello!",
    );
  });
  await withServer(new ThinkingGenerator(REPLY, false), async (base) => {
    const r = await post(base, {});
    assertEquals(r.choices[0].message.content, REPLY.join(""));
    assertEquals(r.choices[0].message.reasoning_content, undefined);
  });
});

Deno.test("unclosed think (max_tokens): all reasoning, content null; a prompt-opened block", async () => {
  const gen = new ThinkingGenerator(["<think>", "\nStill", " going"]);
  gen.finish = "length";
  await withServer(gen, async (base) => {
    const r = await post(base, { max_tokens: 3 });
    assertEquals(r.choices[0].message.reasoning_content, "Still going");
    assertEquals(r.choices[0].message.content, null);
    assertEquals(r.choices[0].finish_reason, "length");
    assertEquals(r.usage.completion_tokens_details, { reasoning_tokens: 3 });
    const s = await streamed(base, { max_tokens: 3 });
    assertEquals([s.reasoning, s.content, s.finish], ["Still going", "", "length"]);

    // The template's generation prompt opened <think>: the output starts inside it.
    gen.script = ["Plan", ".\n", "</think>", "\n\nDone"];
    gen.finish = "stop";
    gen.reasoningOpen = true;
    const opened = await post(base, {});
    assertEquals(opened.choices[0].message.reasoning_content, "Plan.");
    assertEquals(opened.choices[0].message.content, "Done");
    assertEquals(opened.usage.completion_tokens_details, { reasoning_tokens: 3 });
    const so = await streamed(base, {});
    assertEquals([so.reasoning, so.content], ["Plan.", "Done"]);
  });
});

const WEATHER = {
  type: "function",
  function: { name: "get_weather", parameters: { type: "object" } },
};
const CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>';

Deno.test("tool calls after the think block are parsed; a <tool_call> inside it is not", async () => {
  const gen = new ThinkingGenerator([
    "<think>\nI could write ",
    CALL.slice(0, 20),
    CALL.slice(20),
    " but first\n</think>\n\n",
    CALL.slice(0, 5),
    CALL.slice(5),
  ]);
  await withServer(gen, async (base) => {
    const r = await post(base, { tools: [WEATHER] });
    const m = r.choices[0].message;
    assertEquals(m.reasoning_content, `I could write ${CALL} but first`);
    assertEquals(m.content, null);
    const calls = m.tool_calls as { function: { name: string; arguments: string } }[];
    assertEquals(calls.map((c) => c.function), [
      { name: "get_weather", arguments: '{"city":"Paris"}' },
    ]);
    assertEquals(r.choices[0].finish_reason, "tool_calls");
    const s = await streamed(base, { tools: [WEATHER] });
    assertEquals(s.reasoning, `I could write ${CALL} but first`);
    assertEquals(s.content, "");
    assertEquals(s.deltas.filter((d) => d.tool_calls).length, 2);
    assertEquals(s.finish, "tool_calls");

    // Only a call inside the think block: no call, content as the model wrote it after.
    gen.script = [`<think>${CALL}</think>`, "\nNo call."];
    const none = await post(base, { tools: [WEATHER] });
    assertEquals(none.choices[0].message.tool_calls, undefined);
    assertEquals(none.choices[0].message.reasoning_content, CALL);
    assertEquals(none.choices[0].message.content, "No call.");
    assertEquals(none.choices[0].finish_reason, "stop");
  });
});

Deno.test("stop strings across </think>; logprobs still one per token", async () => {
  const gen = new ThinkingGenerator(REPLY);
  await withServer(gen, async (base) => {
    // A stop string that spans the tag cuts in the reasoning: an unclosed block.
    const cut = await post(base, { stop: ["greets.\n</think>\n\nHel"] });
    assertEquals(cut.choices[0].message.reasoning_content, "The user");
    assertEquals(cut.choices[0].message.content, null);
    assertEquals(cut.choices[0].finish_reason, "stop");
    // One that starts like the tag but is not there holds text back, then lets it all through.
    const held = await streamed(base, { stop: ["</think>\n\nBye"] });
    assertEquals([held.reasoning, held.content], ["The user greets.", "Hello!"]);
    // A stop string in the answer.
    const answer = await post(base, { stop: ["!"] });
    assertEquals(answer.choices[0].message.content, "Hello");
    assertEquals(answer.choices[0].message.reasoning_content, "The user greets.");

    const lp = await streamed(base, { logprobs: true });
    const entries = lp.chunks.flatMap((c) =>
      c.choices.flatMap((ch) => (ch.logprobs as { content?: unknown[] } | null)?.content ?? [])
    );
    assertEquals(entries.length, REPLY.length);
    assertEquals(lp.reasoning, "The user greets.");
  });
});

Deno.test("chat_template_kwargs reach the generator", async () => {
  const gen = new ThinkingGenerator(["Hi"]);
  await withServer(gen, async (base) => {
    await post(base, { chat_template_kwargs: { enable_thinking: false } });
    assertEquals(gen.last!.chatTemplateKwargs, { enable_thinking: false });
    await post(base, {});
    assertEquals(gen.last!.chatTemplateKwargs, undefined);
  });
});

/** The 400's param of a body, or "" when it is accepted. */
function refusedParam(endpoint: "chat" | "completion", body: Record<string, unknown>): string {
  try {
    parseRequest(endpoint, { model: "m", messages: USER, prompt: "x", ...body });
  } catch (e) {
    const err = e as ApiError;
    assertEquals(err.status, 400, err.message);
    return err.param ?? "(none)";
  }
  return "";
}

Deno.test("reasoning_format and chat_template_kwargs are checked (400 naming the field)", () => {
  for (const f of ["none", "auto", "deepseek", "deepseek-legacy"]) {
    assertEquals(refusedParam("chat", { reasoning_format: f }), "", f);
  }
  assertEquals(refusedParam("chat", { reasoning_format: "r1" }), "reasoning_format");
  assertEquals(refusedParam("chat", { reasoning_format: true }), "reasoning_format");
  assertEquals(refusedParam("chat", { chat_template_kwargs: { enable_thinking: false } }), "");
  assertEquals(refusedParam("chat", { chat_template_kwargs: [] }), "chat_template_kwargs");
  assertEquals(refusedParam("chat", { chat_template_kwargs: "x" }), "chat_template_kwargs");
  for (const k of ["messages", "tools", "add_generation_prompt", "bos_token", "eos_token"]) {
    assertEquals(
      refusedParam("chat", { chat_template_kwargs: { [k]: "x" } }),
      `chat_template_kwargs.${k}`,
    );
  }
  assertEquals(
    refusedParam("chat", { chat_template_kwargs: { enable_thinking: "no" } }),
    "chat_template_kwargs.enable_thinking",
  );
  assertEquals(
    refusedParam("chat", { chat_template_kwargs: { note: "x".repeat(17_000) } }),
    "chat_template_kwargs",
  );
  // Neither llama.cpp nor vLLM reads it at the top level: refused, pointing at the kwargs.
  assertEquals(refusedParam("chat", { enable_thinking: false }), "enable_thinking");
  assertEquals(refusedParam("completion", { reasoning_format: "none" }), "reasoning_format");
  assertEquals(
    refusedParam("completion", { chat_template_kwargs: { a: 1 } }),
    "chat_template_kwargs",
  );
});

Deno.test("over HTTP: a reserved kwarg is a 400 with OpenAI's error shape", async () => {
  await withServer(new ThinkingGenerator(["Hi"]), async (base) => {
    const r = await fetch(`${base}/v1/chat/completions`, {
      method: "POST",
      body: JSON.stringify({ model: "m", messages: USER, chat_template_kwargs: { messages: [] } }),
    });
    assertEquals(r.status, 400);
    const body = await r.json();
    assertEquals(body.error.param, "chat_template_kwargs.messages");
    assert(/reserved/.test(body.error.message), body.error.message);
  });
});
