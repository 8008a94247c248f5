/** The local Engine (cluster/pipeline/engine.ts): a Head over one in-process stage. */
import { createReferenceBackend } from "../../../kernels/reference/mod.ts";
import { Engine } from "../../../cluster/pipeline/engine.ts";
import { assertEquals } from "../../support/assert.ts";
import { FIXTURES } from "../../support/paths.ts";

Deno.test("an engine asked for more positions than the model holds ends a long generation as 'length'", async () => {
  const engine = await Engine.open(
    `${FIXTURES}/models/stories260K.gguf`,
    createReferenceBackend(),
    {
      nCtx: 4096,
    },
  );
  try {
    const max = engine.stage.config.contextLength;
    assertEquals(engine.nCtx, max);
    // Before, the generation was bounded by the 4096 asked for while the stage's session held
    // the model's 2048: it failed with "context is full" once the cache was.
    const res = await engine.generate({
      promptTokens: [1],
      maxTokens: max + 16,
      stopAtEog: false,
      sampler: { temperature: 0 },
    });
    assertEquals(res.finishReason, "length");
    assertEquals(res.promptTokens.length + res.tokens.length, max);
  } finally {
    engine.close();
  }
});
