/** Request parsing of the OpenAI-compatible API (cluster/api/openai.ts). */
import { parseRequest } from "../../../cluster/api/openai.ts";
import { assertEquals } from "../../support/assert.ts";

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
