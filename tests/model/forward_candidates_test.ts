/**
 * LlamaStage.forwardCandidates hands the sampler's request to the backend whole: the softmax sum
 * only when the request wants it (log-probabilities), the same candidates either way.
 */
import { createWasmBackend } from "../../kernels/wasm/mod.ts";
import { openGGUF } from "../../model/gguf/mod.ts";
import { LlamaStage } from "../../model/llama.ts";
import { assert, assertEquals } from "../support/assert.ts";
import { REPO } from "../support/paths.ts";

Deno.test("forwardCandidates: the softmax sum only where the request wants it", async () => {
  const be = await createWasmBackend({ threads: 1 });
  const file = await openGGUF(`${REPO}/models/stories260K.gguf`);
  const stage = await LlamaStage.load(file, be);
  file.close();
  try {
    const tokens = Int32Array.of(1, 20, 31);
    const exclude = Int32Array.of(20);
    const run = async (sum?: boolean) => {
      const s = stage.newSession(16);
      const out = await stage.forwardCandidates(s, { tokens }, { k: 8, exclude, sum });
      stage.endSession(s);
      assert("candidates" in out, "the WASM backend answers with candidates");
      return out.candidates;
    };
    const full = await run();
    const lean = await run(false);
    assertEquals(Array.from(lean.ids), Array.from(full.ids));
    assertEquals(Array.from(lean.values), Array.from(full.values));
    assertEquals(Number.isFinite(full.sumExp), true);
    assertEquals(Number.isNaN(lean.sumExp), true);
  } finally {
    stage.dispose();
    be.dispose();
  }
});
