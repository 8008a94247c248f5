/**
 * A model whose output is NaN (its weights hold NaN) fails its request with a clear error on
 * every backend, with or without log-probabilities, instead of answering tokens; a sound model
 * is never taken for one.
 */
import { Engine } from "../../../cluster/pipeline/mod.ts";
import { toApiError } from "../../../cluster/api/mod.ts";
import { editedGGUF } from "../../support/gguf_edit.ts";
import { everyBackend } from "../../support/backends.ts";
import { REPO } from "../../support/paths.ts";
import { assert, assertEquals } from "../../support/assert.ts";

/** stories260K with its output norm's weights NaN: every logit of every step is NaN. */
async function nanModel(): Promise<string> {
  return await editedGGUF(`${REPO}/models/stories260K.gguf`, {
    tensors: (ts) =>
      ts.map((t) =>
        t.name === "output_norm.weight"
          ? { ...t, data: new Uint8Array(new Float32Array(t.data.length / 4).fill(NaN).buffer) }
          : t
      ),
  });
}

for (const [name, make, ignore] of everyBackend()) {
  Deno.test({
    name:
      `${name}: NaN logits fail the request (greedy, sampled, with logprobs), not answer tokens`,
    ignore,
    fn: async () => {
      // Before: greedy answered token 511 without logprobs and 0 with them, as argmax skipped
      // the NaNs (found by an independent tester).
      const path = await nanModel();
      const engine = await Engine.open(path, await make());
      try {
        for (
          const sampler of [
            { temperature: 0 },
            { temperature: 0, logprob: false },
            { temperature: 0, topLogprobs: 2 },
            { temperature: 0.8, seed: 1 },
          ]
        ) {
          const e = await engine.generate({ prompt: "Once", maxTokens: 4, sampler }).then(
            (r) => new Error(`answered ${r.tokens}`),
            (e) => e as Error,
          );
          assert(e.message.includes("logits hold NaN"), `${JSON.stringify(sampler)}: ${e}`);
          const api = toApiError(e);
          assertEquals(api.status, 500);
          assert(!api.message.includes("a bug"), api.message);
        }
      } finally {
        engine.close();
        await Deno.remove(path);
      }
    },
  });
}

for (const [name, make, ignore] of everyBackend()) {
  Deno.test({
    name: `${name}: a sound model's greedy request without log-probabilities answers`,
    ignore,
    fn: async () => {
      // Before: the backend's candidates skip the softmax sum when no log-probabilities are
      // wanted (it is NaN then), and the NaN check read that as a NaN row, so every served
      // greedy completion on WASM failed with a 500 (the OpenAI API asks for none by default).
      const engine = await Engine.open(`${REPO}/models/stories260K.gguf`, await make());
      try {
        const want = await engine.generate({
          prompt: "Once",
          maxTokens: 8,
          sampler: { temperature: 0 },
        });
        const got = await engine.generate({
          prompt: "Once",
          maxTokens: 8,
          sampler: { temperature: 0, logprob: false },
        });
        assertEquals(got.tokens, want.tokens);
      } finally {
        engine.close();
      }
    },
  });
}
