/**
 * An agent on the backend users get by default (`--backend auto`: WASM on a machine without a
 * GPU), not the reference backend the other e2e tests run for speed: the OpenAI API answers
 * greedy completions, streamed and not, with and without log-probabilities, and they agree.
 */
import OpenAI from "openai";
import { assert, assertEquals } from "../support/assert.ts";
import { startAgent, stopAll } from "../support/agents.ts";
import { STORIES } from "../support/paths.ts";

Deno.test("an agent on the default backend answers greedy OpenAI requests, logprobs or not", async () => {
  // Before: with no log-probabilities asked for (the API's default), the WASM backend's sampling
  // candidates carry no softmax sum (NaN), the NaN check took that for a broken model, and every
  // such completion failed with a 500. The other e2e tests use the reference backend, which
  // hands the whole logit row to the host, so none saw it.
  const agent = await startAgent({ id: "auto", model: STORIES, extra: ["--backend", "auto"] });
  try {
    const api = new OpenAI({
      baseURL: `http://127.0.0.1:${agent.httpPort}/v1`,
      apiKey: "none",
      maxRetries: 0,
    });
    let h: Record<string, unknown> = {};
    for (let i = 0; i < 300 && h.status !== "ok"; i++) {
      h = await (await fetch(`http://127.0.0.1:${agent.httpPort}/health`)).json();
      if (h.status !== "ok") await new Promise((r) => setTimeout(r, 50));
    }
    assertEquals(h.status, "ok");
    const backend = agent.logs.find((l) => l.msg === "backend selected")?.backend;
    assert(backend !== "reference", `the agent chose ${backend}`);

    const req = { model: "stories260K.gguf", prompt: "Once upon a time", max_tokens: 24 };
    const plain = await api.completions.create({ ...req, temperature: 0 });
    const withLogprobs = await api.completions.create({ ...req, temperature: 0, logprobs: 2 });
    assertEquals(plain.usage?.completion_tokens, 24);
    assertEquals(plain.choices[0].text, withLogprobs.choices[0].text);
    let streamed = "";
    for await (const c of await api.completions.create({ ...req, temperature: 0, stream: true })) {
      streamed += c.choices[0]?.text ?? "";
    }
    assertEquals(streamed, plain.choices[0].text);
    const chat = await api.chat.completions.create({
      model: "stories260K.gguf",
      messages: [{ role: "user", content: "A dog" }],
      max_tokens: 8,
      temperature: 0,
    });
    assertEquals(chat.choices[0].finish_reason, "length");
  } finally {
    await stopAll([agent]);
  }
});
