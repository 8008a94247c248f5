/**
 * Reasoning through a real agent process: a Qwen3 model whose template opens `<think>` in its
 * generation prompt (as QwQ's and newer DeepSeek-R1 templates do) answers with
 * `reasoning_content` where `reasoning_format: "none"` gives the same text as content, streamed
 * too, with `reasoning_tokens` in the usage; `chat_template_kwargs` reaches the template (the
 * prompt's token count equals the model's tokenizer on the chat rendered here with them), over
 * HTTP and over gRPC (`chat_template_kwargs_json`, bounded, INVALID_ARGUMENT otherwise).
 */
import OpenAI from "openai";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { assert, assertEquals } from "../support/assert.ts";
import { startAgent, stopAll, waitForPlacement } from "../support/agents.ts";
import { FIXTURES } from "../support/paths.ts";
import { editedGGUF } from "../support/gguf_edit.ts";
import { openGGUF } from "../../model/gguf/mod.ts";
import { tokenizerFromMetadata } from "../../model/tokenizer/mod.ts";
import { type ChatMessage, ChatTemplate, splitReasoning } from "../../model/chat/mod.ts";
import { InferenceService } from "../../proto/mod.ts";

const QWEN3 = Deno.readTextFileSync(
  new URL("../model/chat/templates/qwen3.jinja", import.meta.url),
);
/** Qwen3's template with the generation prompt opening the think block (QwQ's way). */
const OPENS_THINK = QWEN3.replace(
  "{{- '<|im_start|>assistant\\n' }}",
  "{{- '<|im_start|>assistant\\n<think>\\n' }}",
);

/** Prompt tokens of `messages` rendered by the model's template here with `kwargs`. */
async function localPromptTokens(path: string, messages: ChatMessage[], kwargs?: object) {
  const f = await openGGUF(path);
  try {
    const tok = tokenizerFromMetadata(f.metadata);
    const chat = ChatTemplate.fromMetadata(f.metadata, tok).render(messages, {
      kwargs: kwargs as Record<string, unknown>,
    });
    return tok.encode(chat.text, chat).length;
  } finally {
    f.close();
  }
}

Deno.test("reasoning through a real agent: reasoning_content, kwargs over HTTP and gRPC", async () => {
  assert(OPENS_THINK !== QWEN3, "the generation prompt line is in the template");
  const model = await editedGGUF(`${FIXTURES}/models/qwen3-bpe-q4_0.gguf`, {
    metadata: (entries) =>
      entries.map((e) => e.key === "tokenizer.chat_template" ? { ...e, value: OPENS_THINK } : e),
  });
  const agent = await startAgent({ id: "think", model, extra: ["--context-size", "1024"] });
  try {
    await waitForPlacement(agent, 1);
    const base = `http://127.0.0.1:${agent.httpPort}`;
    const api = new OpenAI({ baseURL: `${base}/v1`, apiKey: "none", maxRetries: 0 });
    const user: ChatMessage[] = [{ role: "user", content: "Why is the sky blue?" }];
    const ask = async (extra: Record<string, unknown>) => {
      const r = await fetch(`${base}/v1/chat/completions`, {
        method: "POST",
        body: JSON.stringify({
          model: "m",
          messages: user,
          max_tokens: 8,
          temperature: 0,
          ...extra,
        }),
      });
      const json = await r.json();
      assertEquals(r.status, 200, JSON.stringify(json));
      return json;
    };
    // The model name the agent serves.
    const name = (await api.models.list()).data[0].id;
    const raw = await ask({ model: name, reasoning_format: "none" });
    const text: string = raw.choices[0].message.content;
    assertEquals(raw.choices[0].message.reasoning_content, undefined);
    // The prompt opened <think>: the output starts as reasoning.
    const expected = splitReasoning(text, true);
    assert(expected.reasoning !== "", `the model wrote some reasoning: ${JSON.stringify(text)}`);
    const split = await ask({ model: name });
    const message = split.choices[0].message;
    assertEquals(message.reasoning_content, expected.reasoning || undefined);
    assertEquals(
      message.content,
      expected.reasoning && !expected.content ? null : expected.content,
    );
    assertEquals(split.usage.completion_tokens, raw.usage.completion_tokens);
    const reasoningTokens = split.usage.completion_tokens_details.reasoning_tokens;
    if (!text.includes("</think>")) assertEquals(reasoningTokens, split.usage.completion_tokens);
    else assert(reasoningTokens > 0 && reasoningTokens <= split.usage.completion_tokens);

    // Streamed: the same split, as delta.reasoning_content and delta.content.
    const r = await fetch(`${base}/v1/chat/completions`, {
      method: "POST",
      body: JSON.stringify({
        model: name,
        messages: user,
        max_tokens: 8,
        temperature: 0,
        stream: true,
      }),
    });
    const deltas = (await r.text()).split("\n\n").filter((l) => l.startsWith("data: {"))
      .map((l) => JSON.parse(l.slice(6)).choices[0]?.delta ?? {});
    assertEquals(deltas.map((d) => d.reasoning_content ?? "").join(""), expected.reasoning);
    assertEquals(deltas.map((d) => d.content ?? "").join(""), expected.content);

    // Under response_format, the JSON constraint starts after the think block (before, it held
    // from the first token, and with this template the value went to reasoning_content and the
    // content was null). This model never closes its block in 8 tokens: the reply is the
    // unconstrained one. With the block closed in the prompt (enable_thinking false), the
    // constraint holds from the first token and the content is the value.
    const json = { response_format: { type: "json_object" } };
    const thinking = await ask({ model: name, ...json });
    assertEquals(thinking.choices[0].message, message);
    for (const stream of [false, true]) {
      const res = await fetch(`${base}/v1/chat/completions`, {
        method: "POST",
        body: JSON.stringify({
          model: name,
          messages: user,
          max_tokens: 48,
          temperature: 0,
          chat_template_kwargs: { enable_thinking: false },
          stream,
          ...json,
        }),
      });
      let content: string;
      if (stream) {
        const ds = (await res.text()).split("\n\n").filter((l) => l.startsWith("data: {"))
          .map((l) => JSON.parse(l.slice(6)).choices[0]?.delta ?? {});
        assertEquals(ds.map((d) => d.reasoning_content ?? "").join(""), "");
        content = ds.map((d) => d.content ?? "").join("");
      } else {
        const m = (await res.json()).choices[0].message;
        assertEquals(m.reasoning_content, undefined);
        content = m.content;
      }
      assertEquals(typeof JSON.parse(content), "object", content);
    }

    // chat_template_kwargs reach the template: enable_thinking false closes the block in the
    // prompt, so the output is content.
    const off = await ask({ model: name, chat_template_kwargs: { enable_thinking: false } });
    const kwargs = { enable_thinking: false };
    assertEquals(off.usage.prompt_tokens, await localPromptTokens(model, user, kwargs));
    assert(off.usage.prompt_tokens > split.usage.prompt_tokens);
    const offRaw = await ask({
      model: name,
      chat_template_kwargs: kwargs,
      reasoning_format: "none",
    });
    assertEquals(off.choices[0].message, {
      ...offRaw.choices[0].message,
      ...(() => {
        const s = splitReasoning(offRaw.choices[0].message.content);
        return s.reasoning
          ? { reasoning_content: s.reasoning, content: s.content || null }
          : { content: s.content };
      })(),
    });

    // gRPC Generate: chat_template_kwargs_json reaches the template; bad ones are refused.
    const rpc = createClient(InferenceService, agent.transport);
    let promptTokens = 0;
    for await (
      const m of rpc.generate({
        messages: [{ role: "user", content: user[0].content }],
        chatTemplateKwargsJson: JSON.stringify(kwargs),
        maxTokens: 2,
        sampler: { temperature: 0 },
      })
    ) {
      if (m.usage) promptTokens = m.usage.promptTokens;
    }
    assertEquals(promptTokens, off.usage.prompt_tokens);
    const msgs = [{ role: "user", content: "hi" }];
    const refused = async (req: Record<string, unknown>) => {
      try {
        for await (const _ of rpc.generate({ maxTokens: 1, ...req })) { /* drain */ }
      } catch (e) {
        assert(e instanceof ConnectError, String(e));
        return `${Code[e.code]}: ${e.rawMessage}`;
      }
      return "accepted";
    };
    assert(
      (await refused({ messages: msgs, chatTemplateKwargsJson: '{"messages": []}' }))
        .startsWith("InvalidArgument: chat_template_kwargs_json.messages would replace"),
    );
    assert(
      (await refused({ messages: msgs, chatTemplateKwargsJson: "[1]" }))
        .startsWith("InvalidArgument: chat_template_kwargs_json must be an object"),
    );
    assert(
      (await refused({ messages: msgs, chatTemplateKwargsJson: "{" }))
        .startsWith("InvalidArgument: chat_template_kwargs_json is not JSON"),
    );
    assertEquals(
      await refused({ prompt: "hi", chatTemplateKwargsJson: "{}" }),
      "InvalidArgument: chat_template_kwargs_json needs messages, not a prompt",
    );
  } finally {
    await stopAll([agent]);
    await Deno.remove(model);
  }
});
