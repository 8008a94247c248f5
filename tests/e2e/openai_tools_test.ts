/**
 * Tool calling through a real agent process: the tools reach the rendered prompt (its token
 * count equals the model's own tokenizer on the chat rendered here with them), a forced call
 * (tool_choice named or "required") comes back as `tool_calls` from the JSON-constrained
 * sampler, streamed too, a history with calls and results renders, and gRPC Generate carries
 * tools_json and the tool fields of its chat messages (bounded, INVALID_ARGUMENT otherwise).
 * stories260K has no chat template: the generic format (a system prompt lists the tools).
 */
import OpenAI from "openai";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { assert, assertEquals } from "../support/assert.ts";
import { startAgent, stopAll, waitForPlacement } from "../support/agents.ts";
import { STORIES } from "../support/paths.ts";
import { openGGUF } from "../../model/gguf/mod.ts";
import { tokenizerFromMetadata } from "../../model/tokenizer/mod.ts";
import {
  type ChatMessage,
  ChatTemplate,
  forcedToolCall,
  type ToolDef,
} from "../../model/chat/mod.ts";
import { InferenceService } from "../../proto/mod.ts";

const WEATHER: ToolDef = {
  name: "get_weather",
  description: "The weather in a unit",
  parameters: {
    type: "object",
    properties: { unit: { enum: ["c", "f"] } },
    required: ["unit"],
    additionalProperties: false,
  },
};
const TOOLS = [{ type: "function" as const, function: WEATHER }];

/** Prompt tokens of `messages` rendered by the model's template here (+ `prefix`). */
async function localPromptTokens(messages: ChatMessage[], tools?: ToolDef[], prefix = "") {
  const f = await openGGUF(STORIES);
  try {
    const tok = tokenizerFromMetadata(f.metadata);
    const chat = ChatTemplate.fromMetadata(f.metadata, tok).render(messages, { tools });
    return tok.encode(chat.text + prefix, chat).length;
  } finally {
    f.close();
  }
}

Deno.test("tool calling through a real agent: prompt with tools, forced calls, gRPC", async () => {
  const agent = await startAgent({
    id: "tools",
    model: STORIES,
    extra: ["--context-size", "2048"],
  });
  try {
    await waitForPlacement(agent, 1);
    const api = new OpenAI({
      baseURL: `http://127.0.0.1:${agent.httpPort}/v1`,
      apiKey: "none",
      maxRetries: 0,
    });
    const user: ChatMessage[] = [{ role: "user", content: "Is it cold?" }];

    // auto: the tools are in the prompt the agent ran, exactly as rendered here.
    const auto = await api.chat.completions.create({
      model: "stories260K",
      messages: [{ role: "user", content: "Is it cold?" }],
      tools: TOOLS,
      max_tokens: 8,
      temperature: 0,
    });
    const withTools = await localPromptTokens(user, [WEATHER]);
    assertEquals(auto.usage!.prompt_tokens, withTools);
    assert(withTools > (await localPromptTokens(user)) + 20, "the tools are in the prompt");

    // A named function: the generic opener after the prompt, the call sampled under its shape.
    const named = await api.chat.completions.create({
      model: "stories260K",
      messages: [{ role: "user", content: "Is it cold?" }],
      tools: TOOLS,
      tool_choice: { type: "function", function: { name: "get_weather" } },
      max_tokens: 1000,
      temperature: 0,
    });
    assertEquals(
      named.usage!.prompt_tokens,
      await localPromptTokens(user, [WEATHER], forcedToolCall("generic", [WEATHER]).prefix),
    );
    const choice = named.choices[0];
    assertEquals(choice.finish_reason, "tool_calls", JSON.stringify(choice));
    assertEquals(choice.message.content, null);
    const call = choice.message.tool_calls![0];
    assert(call.type === "function" && call.id.startsWith("call_"));
    assertEquals(call.function.name, "get_weather");
    assert(["c", "f"].includes(JSON.parse(call.function.arguments).unit), call.function.arguments);

    // "required", streamed: the official client assembles the call from the chunks.
    const stream = api.chat.completions.stream({
      model: "stories260K",
      messages: [{ role: "user", content: "Is it cold?" }],
      tools: TOOLS,
      tool_choice: "required",
      max_tokens: 1000,
      temperature: 0.8,
      seed: 7,
    });
    const final = await stream.finalChatCompletion();
    assertEquals(final.choices[0].finish_reason, "tool_calls");
    const streamed = final.choices[0].message.tool_calls![0];
    assert(streamed.type === "function");
    assertEquals(streamed.function.name, "get_weather");
    assert(["c", "f"].includes(JSON.parse(streamed.function.arguments).unit));

    // The call and its result sent back: the history renders, as it does here.
    const history: ChatMessage[] = [
      ...user,
      {
        role: "assistant",
        content: "",
        toolCalls: [{ id: call.id, name: "get_weather", arguments: { unit: "c" } }],
      },
      { role: "tool", content: "-3", toolCallId: call.id },
    ];
    const next = await api.chat.completions.create({
      model: "stories260K",
      messages: [
        { role: "user", content: "Is it cold?" },
        {
          role: "assistant",
          content: null,
          tool_calls: [{
            id: call.id,
            type: "function",
            function: { name: "get_weather", arguments: '{"unit": "c"}' },
          }],
        },
        { role: "tool", tool_call_id: call.id, content: "-3" },
      ],
      tools: TOOLS,
      max_tokens: 4,
      temperature: 0,
    });
    assertEquals(next.usage!.prompt_tokens, await localPromptTokens(history, [WEATHER]));

    // gRPC Generate: tools_json and the messages' tool fields reach the template too.
    const rpc = createClient(InferenceService, agent.transport);
    let promptTokens = 0;
    for await (
      const m of rpc.generate({
        messages: [
          { role: "user", content: "Is it cold?" },
          {
            role: "assistant",
            toolCalls: [{ id: call.id, name: "get_weather", arguments: '{"unit": "c"}' }],
          },
          { role: "tool", content: "-3", toolCallId: call.id },
        ],
        toolsJson: JSON.stringify(TOOLS),
        maxTokens: 2,
        sampler: { temperature: 0 },
      })
    ) {
      if (m.usage) promptTokens = m.usage.promptTokens;
    }
    assertEquals(promptTokens, await localPromptTokens(history, [WEATHER]));
    const refused = async (req: Record<string, unknown>) => {
      try {
        for await (const _ of rpc.generate({ maxTokens: 1, ...req })) { /* drain */ }
      } catch (e) {
        assert(e instanceof ConnectError, String(e));
        return `${Code[e.code]}: ${e.rawMessage}`;
      }
      return "accepted";
    };
    const messages = [{ role: "user", content: "hi" }];
    assertEquals(
      await refused({ messages, toolsJson: "[{" }),
      "InvalidArgument: tools_json is not JSON: " +
        (() => {
          try {
            JSON.parse("[{");
          } catch (e) {
            return (e as Error).message;
          }
        })(),
    );
    assert(
      (await refused({
        messages,
        toolsJson: '[{"type": "function", "function": {"name": "a b"}}]',
      }))
        .startsWith("InvalidArgument: tools[0].function.name must be"),
    );
    assert(
      (await refused({ messages: [{ role: "tool", content: "x" }] }))
        .startsWith("InvalidArgument: messages[0].tool_call_id must be"),
    );
    assertEquals(
      await refused({ prompt: "hi", toolsJson: JSON.stringify(TOOLS) }),
      "InvalidArgument: tools_json needs messages, not a prompt",
    );
  } finally {
    await stopAll([agent]);
  }
});
