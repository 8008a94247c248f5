/**
 * Multi-step greedy decode on the device (LlamaStage.decodeGreedy over topCandidatesInto +
 * embedAt): each step's id stays on the GPU and feeds the next step's embedding, one read back
 * for the run. It must give exactly the candidates of a host loop of forwardCandidates, on a
 * llama and on gemma3 (which scales its embeddings), and read back once per run. Runs on
 * llvmpipe in CI; skipped without an adapter.
 */
import { candidatesAt, candidateWords } from "../../../kernels/backend.ts";
import { createWebGPUBackend } from "../../../kernels/webgpu/mod.ts";
import { openGGUF } from "../../../model/gguf/mod.ts";
import { LlamaStage } from "../../../model/llama.ts";
import { assert, assertEquals, assertThrows } from "../../support/assert.ts";
import { FIXTURES, REPO } from "../../support/paths.ts";
import { bufOf, ignore } from "./helpers.ts";

for (
  const [label, path] of [
    ["stories260K", `${REPO}/models/stories260K.gguf`],
    ["gemma3-q8_0", `${FIXTURES}/models/gemma3-q8_0.gguf`],
  ]
) {
  Deno.test({
    ignore,
    name: `webgpu decodeGreedy (${label}): the ids stay on the device and equal a host loop`,
    fn: async () => {
      const gpu = await createWebGPUBackend();
      const file = await openGGUF(path);
      let stage: LlamaStage;
      try {
        stage = await LlamaStage.load(file, gpu, { maxBatch: 8 });
      } finally {
        file.close();
      }
      try {
        const prompt = Int32Array.of(1, 20, 31, 7, 3);
        const steps = 12, k = 3;
        // The host loop: one forwardCandidates (one read) per token.
        const a = stage.newSession(64);
        let out = await stage.forwardCandidates(a, { tokens: prompt }, {
          k,
          exclude: new Int32Array(),
        });
        const first = ("candidates" in out ? out.candidates : null)!.ids[0];
        const loop = [];
        let id = first;
        for (let j = 0; j < steps; j++) {
          out = await stage.forwardCandidates(a, { tokens: Int32Array.of(id) }, {
            k,
            exclude: new Int32Array(),
          });
          assert("candidates" in out, "webgpu computes candidates");
          loop.push(out.candidates);
          id = out.candidates.ids[0];
        }
        // The device run from the same state: one read for all steps.
        const b = stage.newSession(64);
        await stage.forwardCandidates(b, { tokens: prompt }, { k, exclude: new Int32Array() });
        const reads = gpu.stats.reads;
        const run = await stage.decodeGreedy(b, first, steps, k);
        assertEquals(gpu.stats.reads - reads, 1, "one read back for the run");
        assertEquals(b.pos, prompt.length + steps);
        for (let j = 0; j < steps; j++) {
          assertEquals(Array.from(run[j].ids), Array.from(loop[j].ids), `step ${j} ids`);
          assertEquals(Array.from(run[j].values), Array.from(loop[j].values), `step ${j} values`);
          assertEquals([run[j].max, run[j].sumExp], [loop[j].max, loop[j].sumExp], `step ${j}`);
        }
        // The run continues like any decode: the next token's candidates agree too.
        const next = await stage.forwardCandidates(b, {
          tokens: Int32Array.of(run[steps - 1].ids[0]),
        }, {
          k,
          exclude: new Int32Array(),
        });
        const more = await stage.forwardCandidates(a, { tokens: Int32Array.of(id) }, {
          k,
          exclude: new Int32Array(),
        });
        assert("candidates" in next && "candidates" in more);
        assertEquals(Array.from(next.candidates.ids), Array.from(more.candidates.ids));
        stage.endSession(a);
        stage.endSession(b);
      } finally {
        stage.dispose();
        gpu.dispose();
      }
    },
  });
}

Deno.test({
  ignore,
  name: "webgpu topCandidatesInto / embedAt: bounds are checked before anything is recorded",
  fn: async () => {
    const gpu = await createWebGPUBackend();
    try {
      const logits = bufOf(gpu, Float32Array.of(0.5, 2, -1, 2, 0));
      const ring = gpu.buffer(2 * candidateWords(2));
      assertThrows(
        () => gpu.topCandidatesInto(logits, 5, 2, ring, candidateWords(2) + 1),
        RangeError,
      );
      assertThrows(() => gpu.topCandidatesInto(logits, 5, 0, ring, 0), RangeError);
      assertThrows(() => gpu.topCandidatesInto(logits, 5, 2, ring, -1), RangeError);
      gpu.topCandidatesInto(logits, 5, 2, ring, candidateWords(2));
      const c = candidatesAt(await gpu.read(ring), candidateWords(2), 2);
      // ties to the lower id, as topCandidates
      assertEquals(Array.from(c.ids), [1, 3]);
      assertEquals(Array.from(c.values), [2, 2]);
    } finally {
      gpu.dispose();
    }
  },
});
