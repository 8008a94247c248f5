/**
 * response_format json_object through a chain of agents: the head binds the shape to the
 * vocabulary, the settings travel to the tail on another agent (SamplerParams.json), and the
 * tail samples under it — the text is an object, or a prefix of one cut by max_tokens.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { startCluster, stopAll, waitForPlacement } from "../support/agents.ts";
import { assertJsonObjectOrPrefix } from "../support/json_output.ts";
import { REPO } from "../support/paths.ts";

Deno.test("json_object through a 3-agent chain: the remote tail holds the shape", async () => {
  const agents = await startCluster(["jc-a", "jc-b", "jc-c"], {
    model: `${REPO}/models/stories260K.gguf`,
    memoryBudget: "1.2MB",
  });
  try {
    const info = await waitForPlacement(agents[0], 3);
    assert(info.placement!.stages.length >= 2, "the tail is on another agent");
    for (const seed of [4, 5]) {
      const r = await fetch(`http://127.0.0.1:${agents[0].httpPort}/v1/completions`, {
        method: "POST",
        body: JSON.stringify({
          model: "stories260K",
          prompt: "Once",
          max_tokens: 16,
          temperature: 1,
          seed,
          response_format: { type: "json_object" },
        }),
      });
      const body = await r.json();
      assertEquals(r.status, 200, JSON.stringify(body));
      assertJsonObjectOrPrefix(body.choices[0].text, body.choices[0].finish_reason);
    }
  } finally {
    await stopAll(agents);
  }
});
