/**
 * The prefix cache through a real agent (--prefix-cache): a prompt that starts like an earlier
 * one reports its cached tokens in usage.prompt_tokens_details and answers exactly what an agent
 * without the cache answers.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { startAgent, stopAll, waitForPlacement } from "../support/agents.ts";
import { REPO } from "../support/paths.ts";

const STORIES = `${REPO}/models/stories260K.gguf`;

const SYSTEM = "Once upon a time, there was a little girl named Lily. She loved to play in the " +
  "park with her friends. One day, she saw a big red ball under a tree and ran to get it. ";

Deno.test("prefix cache: a shared prompt prefix is reused, with the same output", async () => {
  const cached = await startAgent({
    id: "pc-on",
    model: STORIES,
    memoryBudget: "64MB",
    extra: ["--prefix-cache", "8MiB"],
  });
  const plain = await startAgent({ id: "pc-off", model: STORIES, memoryBudget: "64MB" });
  try {
    await waitForPlacement(cached, 1);
    await waitForPlacement(plain, 1);
    const ask = async (port: number, prompt: string) => {
      const r = await fetch(`http://127.0.0.1:${port}/v1/completions`, {
        method: "POST",
        body: JSON.stringify({ model: "stories260K", prompt, max_tokens: 12, temperature: 0 }),
      });
      const body = await r.json();
      assertEquals(r.status, 200, JSON.stringify(body));
      return body;
    };
    const first = await ask(cached.httpPort, SYSTEM + "Her mom said");
    assertEquals(first.usage.prompt_tokens_details.cached_tokens, 0, "nothing cached yet");
    for (const turn of ["The ball was", "Lily smiled and"]) {
      const got = await ask(cached.httpPort, SYSTEM + turn);
      const want = await ask(plain.httpPort, SYSTEM + turn);
      const n = got.usage.prompt_tokens_details.cached_tokens;
      assert(n >= 32, `cached tokens ${n}: the shared ${SYSTEM.length}-character prefix`);
      assert(n < got.usage.prompt_tokens, "at least the last prompt token runs");
      assertEquals(want.usage.prompt_tokens_details.cached_tokens, 0);
      assertEquals(got.choices[0].text, want.choices[0].text, "same greedy output");
    }
  } finally {
    await stopAll([cached, plain]);
  }
});
