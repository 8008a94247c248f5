/** Request parsing of the OpenAI-compatible API (cluster/api/request.ts). */
import { parseRequest } from "../../../cluster/api/request.ts";
import type { ApiError } from "../../../cluster/api/errors.ts";
import { assert, assertEquals } from "../../support/assert.ts";
import { Sampler } from "../../../model/sampler.ts";

Deno.test("a request without logprobs tells the generator nobody reads them", () => {
  const chat = (extra: Record<string, unknown>) =>
    parseRequest("chat", { model: "m", messages: [{ role: "user", content: "hi" }], ...extra });
  assertEquals(chat({}).params.logprobs, false);
  assertEquals(chat({ logprobs: false }).params.logprobs, false);
  assertEquals(chat({ logprobs: true }).params.logprobs, true);
  assertEquals(chat({ logprobs: true, top_logprobs: 2 }).params.topLogprobs, 2);
  const completion = (extra: Record<string, unknown>) =>
    parseRequest("completion", { model: "m", prompt: "hi", ...extra });
  assertEquals(completion({}).params.logprobs, false);
  assertEquals(completion({ logprobs: 0 }).params.logprobs, true);
  assertEquals(completion({ logprobs: 3 }).params.topLogprobs, 3);
});

Deno.test("top_p 0, which OpenAI allows, keeps the most probable token only (a valid sampler setting)", () => {
  const params = parseRequest("completion", { model: "m", prompt: "hi", top_p: 0 }).params;
  assertEquals(params.topP, 1e-6);
  new Sampler({ topP: params.topP }); // accepted, where 0 is refused
});

Deno.test("stop strings longer than 512 characters are refused (matching them costs L² per token)", () => {
  const req = (stop: unknown) => parseRequest("completion", { model: "m", prompt: "hi", stop });
  assertEquals(req(["x".repeat(512)]).params.stop, ["x".repeat(512)]);
  let message = "";
  try {
    req(["ok", "y".repeat(513)]);
  } catch (e) {
    message = (e as Error).message;
  }
  assertEquals(message, "stop strings are at most 512 characters");
});

/** The 400's param of `body` sent to `endpoint`, or "" when it is accepted. */
function refusedParam(endpoint: "chat" | "completion", body: Record<string, unknown>): string {
  const base = endpoint === "chat"
    ? { model: "m", messages: [{ role: "user", content: "hi" }] }
    : { model: "m", prompt: "hi" };
  try {
    parseRequest(endpoint, { ...base, ...body });
  } catch (e) {
    const err = e as ApiError;
    assertEquals(err.status, 400, err.message);
    return err.param ?? "(none)";
  }
  return "";
}

Deno.test("logit_bias is checked and carried to the sampler", () => {
  for (const endpoint of ["chat", "completion"] as const) {
    assertEquals(refusedParam(endpoint, { logit_bias: "garbage" }), "logit_bias");
    assertEquals(refusedParam(endpoint, { logit_bias: [1] }), "logit_bias");
    assertEquals(refusedParam(endpoint, { logit_bias: { "x": 1 } }), "logit_bias");
    assertEquals(refusedParam(endpoint, { logit_bias: { "5": 101 } }), "logit_bias");
    assertEquals(refusedParam(endpoint, { logit_bias: { "4294967296": 1 } }), "logit_bias");
    const many = Object.fromEntries(Array.from({ length: 301 }, (_, i) => [String(i), 1]));
    assertEquals(refusedParam(endpoint, { logit_bias: many }), "logit_bias");
    const base = endpoint === "chat"
      ? { model: "m", messages: [{ role: "user", content: "hi" }] }
      : { model: "m", prompt: "hi" };
    const parsed = parseRequest(endpoint, { ...base, logit_bias: { "5": -100, "7": 2.5 } });
    assertEquals(parsed.params.logitBias, { 5: -100, 7: 2.5 });
    // Nothing to apply: as good as left out.
    assertEquals(parseRequest(endpoint, { ...base, logit_bias: {} }).params.logitBias, undefined);
    assertEquals(refusedParam(endpoint, { logit_bias: null }), "");
  }
});

Deno.test("fields OpenAI checks are checked: stream_options, echo, suffix, tool_choice", () => {
  assertEquals(refusedParam("chat", { stream_options: { include_usage: true } }), "stream_options");
  assertEquals(refusedParam("chat", { stream: false, stream_options: {} }), "stream_options");
  assertEquals(refusedParam("chat", { stream: true, stream_options: "yes" }), "stream_options");
  assertEquals(
    refusedParam("chat", { stream: true, stream_options: { include_usage: "yes" } }),
    "stream_options.include_usage",
  );
  assertEquals(refusedParam("chat", { stream: true, stream_options: { include_usage: true } }), "");
  assertEquals(refusedParam("chat", { stream_options: null }), "");
  assertEquals(refusedParam("completion", { echo: "true" }), "echo");
  assertEquals(refusedParam("completion", { echo: true }), "echo");
  assertEquals(refusedParam("completion", { echo: false }), "");
  assertEquals(refusedParam("completion", { suffix: 5 }), "suffix");
  assertEquals(refusedParam("completion", { suffix: "end" }), "suffix");
  assertEquals(refusedParam("completion", { suffix: "" }), "");
  assertEquals(refusedParam("chat", { tool_choice: "required" }), "tool_choice");
  assertEquals(
    refusedParam("chat", { tool_choice: { type: "function", function: { name: "f" } } }),
    "tool_choice",
  );
  assertEquals(refusedParam("chat", { tool_choice: "sometimes" }), "tool_choice");
  assertEquals(refusedParam("chat", { tool_choice: "none" }), "");
  assertEquals(refusedParam("chat", { tool_choice: "auto" }), "");
});

Deno.test("a chat message's role is one of OpenAI's; a range error prints its bounds exactly", () => {
  // A tool result names the call it answers (tool_call_id), as OpenAI requires.
  const chat = (role: string) =>
    refusedParam("chat", {
      messages: [{ role: "user", content: "a" }, {
        role,
        content: "b",
        ...(role === "tool" ? { tool_call_id: "call_1" } : {}),
      }],
    });
  for (const role of ["system", "developer", "user", "assistant", "tool", "function"]) {
    assertEquals(chat(role), "", role);
  }
  // Before, any string was accepted and rendered into the template as a speaker.
  assertEquals(chat("bogus"), "messages[1].role");
  assertEquals(chat("User"), "messages[1].role");
  let message = "";
  try {
    parseRequest("completion", { model: "m", prompt: "hi", seed: 2 ** 65 });
  } catch (e) {
    message = (e as Error).message;
  }
  // Not "-9223372036854776000 to 18446744073709552000" (the floats' shortest decimal forms).
  assertEquals(message, `seed must be from -2^63 to 2^64, got ${2 ** 65}`);
});

Deno.test("a seed past 2^53 is refused: JSON parsing has already dropped the bits it is drawn by", () => {
  const seedOf = (seed: number) =>
    parseRequest("completion", { model: "m", prompt: "hi", seed }).params.seed;
  assertEquals(seedOf(2 ** 53 - 1), 2n ** 53n - 1n);
  assertEquals(seedOf(-1), 2n ** 64n - 1n);
  assertEquals(seedOf(-(2 ** 53 - 1)), 2n ** 64n - (2n ** 53n - 1n));
  // 2^53 + 1 arrives as 2^53, and 2^64 − 1 as 2^64 (which ran as seed 0).
  for (
    const seed of [JSON.parse("9007199254740993"), 2 ** 60, JSON.parse("18446744073709551615")]
  ) {
    let message = "";
    try {
      seedOf(seed);
    } catch (e) {
      message = (e as Error).message;
    }
    assert(message.includes("past ±(2^53 − 1)"), `seed ${seed}: ${message}`);
  }
});

Deno.test("fields asking for output this server does not make are 400s naming them", () => {
  const fieldOf = (extra: Record<string, unknown>) => {
    try {
      parseRequest("chat", { model: "m", messages: [{ role: "user", content: "hi" }], ...extra });
      return "";
    } catch (e) {
      return (e as ApiError).param;
    }
  };
  // Before, each was taken and silently left out of the answer.
  assertEquals(fieldOf({ modalities: ["text", "audio"] }), "modalities");
  assertEquals(fieldOf({ audio: { voice: "alloy", format: "wav" } }), "audio");
  assertEquals(fieldOf({ prediction: { type: "content", content: "x" } }), "prediction");
  assertEquals(fieldOf({ web_search_options: {} }), "web_search_options");
  assertEquals(fieldOf({ modalities: ["text"], user: "u1", store: false, metadata: {} }), "");
});

Deno.test("errors name what is wrong: a text part without text, n, a number too large for a double", () => {
  // Found by an independent tester: these said "got type \"text\"", "from 1 to 128" (only 1 is
  // ever taken) and "got null".
  const message = (endpoint: "chat" | "completion", body: Record<string, unknown>) => {
    try {
      parseRequest(endpoint, { model: "m", ...body });
    } catch (e) {
      return `${(e as ApiError).param}: ${(e as Error).message}`;
    }
    return "accepted";
  };
  assertEquals(
    message("chat", { messages: [{ role: "user", content: [{ type: "text" }] }] }),
    "messages[0].content[0].text: a text content part needs its text as a string (got none)",
  );
  for (const n of [0, 2]) {
    assertEquals(
      message("completion", { prompt: "hi", n }),
      `n: n must be 1 (got ${n}): send one request per completion you want`,
    );
  }
  assertEquals(
    message("completion", { prompt: "hi", temperature: JSON.parse("1e309") }),
    "temperature: temperature must be a finite number, got Infinity",
  );
});

Deno.test("a top_p below float precision, a lone-surrogate stop, a bad max_tokens beside max_completion_tokens", () => {
  // 1e-46 is within [0, 1] but a float32 0 at the tail, which refused it after a stream's 200.
  const params = parseRequest("completion", { model: "m", prompt: "hi", top_p: 1e-46 }).params;
  assertEquals(params.topP, 1e-6);
  new Sampler({ topP: params.topP });
  // A lone surrogate matched half of an emoji and left the other half in the answer.
  assertEquals(refusedParam("completion", { stop: "\ude00" }), "stop");
  assertEquals(refusedParam("chat", { stop: ["ok", "\ud83d"] }), "stop");
  assertEquals(refusedParam("chat", { stop: ["😀"] }), "");
  // max_tokens went unchecked when max_completion_tokens was there.
  for (const bad of ["bad", -5]) {
    assertEquals(refusedParam("chat", { max_completion_tokens: 5, max_tokens: bad }), "max_tokens");
  }
  const both = parseRequest("chat", {
    model: "m",
    messages: [{ role: "user", content: "hi" }],
    max_completion_tokens: 5,
    max_tokens: 9,
  });
  assertEquals(both.params.maxTokens, 5);
});
