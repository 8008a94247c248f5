/** Request parsing of the OpenAI-compatible API (cluster/api/openai.ts). */
import { parseRequest } from "../../../cluster/api/openai.ts";
import { assertEquals } from "../../support/assert.ts";
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
