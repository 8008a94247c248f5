/**
 * RoPE frequency factors (`rope_freqs.weight`, which every Llama 3.1+ GGUF carries): θ of pair i
 * divided by factor i, as llama.cpp does. Checked against llama.cpp's own logits for a fixture
 * model with Llama 3.1-style factors added (tests/model/golden/rope_freqs_tiny-f32.json says how
 * they were made). Before, the tensor was ignored: 0.22 off in the logits, silently.
 */
import { createReferenceBackend } from "../../kernels/reference/mod.ts";
import { GGMLType } from "../../kernels/quant/types.ts";
import { openGGUF } from "../../model/gguf/mod.ts";
import { LlamaStage } from "../../model/llama.ts";
import { ModelConfigError } from "../../model/config.ts";
import { argmax } from "../../model/sampler.ts";
import { FIXTURES } from "../support/paths.ts";
import { assert, assertEquals, assertRejects } from "../support/assert.ts";
import { editedGGUF } from "../support/gguf_edit.ts";
import { everyBackend } from "../support/backends.ts";

const golden = JSON.parse(
  await Deno.readTextFile(new URL("./golden/rope_freqs_tiny-f32.json", import.meta.url)),
) as { factors: number[]; tokens: number[]; greedy: number; logits: number[] };

/** A copy of fixture `name` with `rope_freqs.weight` = `factors` (given type) added. */
function withRopeFreqs(name: string, factors: Float32Array, type = GGMLType.F32): Promise<string> {
  const data = new Uint8Array(factors.slice().buffer);
  return editedGGUF(`${FIXTURES}/models/${name}`, {
    tensors: (t) => [...t, { name: "rope_freqs.weight", dims: [factors.length], type, data }],
  });
}

const backends = everyBackend();

for (const [name, make, ignore] of backends) {
  Deno.test({
    name: `rope_freqs: ${name} matches llama.cpp's logits (within the f32 tolerance 1e-3)`,
    ignore,
    async fn() {
      const path = await withRopeFreqs("tiny-f32.gguf", Float32Array.from(golden.factors));
      const be = await make();
      const file = await openGGUF(path);
      try {
        const stage = await LlamaStage.load(file, be);
        const out = await stage.forward(stage.newSession(64, "f32"), {
          tokens: Int32Array.from(golden.tokens),
        });
        assert("logits" in out);
        let worst = 0;
        for (let i = 0; i < golden.logits.length; i++) {
          worst = Math.max(worst, Math.abs(out.logits[i] - golden.logits[i]));
        }
        assert(worst <= 1e-3, `max |logit − llama.cpp's| = ${worst}`);
        assertEquals(argmax(out.logits), golden.greedy);
        stage.dispose();
      } finally {
        file.close();
        be.dispose();
        await Deno.remove(path);
      }
    },
  });
}

Deno.test("rope_freqs: a tensor of the wrong size, type or values is refused by name", async () => {
  const be = createReferenceBackend();
  const cases: [Float32Array, GGMLType, string][] = [
    [new Float32Array(7).fill(1), GGMLType.F32, "expected F32 [8]"],
    [Float32Array.from([1, 1, 1, 2, 4, 8, 8, 0]), GGMLType.F32, "rope_freqs.weight[7] is 0"],
    [Float32Array.from([1, 1, 1, NaN, 4, 8, 8, 8]), GGMLType.F32, "rope_freqs.weight[3] is NaN"],
  ];
  for (const [factors, type, message] of cases) {
    const path = await withRopeFreqs("tiny-f32.gguf", factors, type);
    const file = await openGGUF(path);
    try {
      await assertRejects(() => LlamaStage.load(file, be), ModelConfigError, message);
    } finally {
      file.close();
      await Deno.remove(path);
    }
  }
  // Architectures whose llama.cpp graph has no such input refuse it rather than ignore it.
  const qwen = await withRopeFreqs("qwen3-q8_0.gguf", new Float32Array(8).fill(1));
  const file = await openGGUF(qwen);
  try {
    await assertRejects(() => LlamaStage.load(file, be), ModelConfigError, "not used by the qwen3");
  } finally {
    file.close();
    await Deno.remove(qwen);
  }
});
