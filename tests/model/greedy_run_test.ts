/**
 * LlamaStage.decodeGreedy where the backend keeps no candidates on the device (the reference
 * backend): a loop of forward passes whose ids are the argmax of each step's logits, ties to the
 * lower id, with the candidates' values, max and softmax sum; and its argument checks. The device
 * path is checked against this loop in tests/kernels/webgpu/greedy_run_test.ts.
 */
import { createReferenceBackend } from "../../kernels/reference/mod.ts";
import { openGGUF } from "../../model/gguf/mod.ts";
import { LlamaStage, StageInputError } from "../../model/llama.ts";
import { assert, assertEquals, assertRejects } from "../support/assert.ts";
import { REPO } from "../support/paths.ts";

Deno.test("decodeGreedy without device candidates: the argmax loop, with values and sums", async () => {
  const be = createReferenceBackend();
  const file = await openGGUF(`${REPO}/models/stories260K.gguf`);
  const stage = await LlamaStage.load(file, be);
  file.close();
  try {
    const prompt = Int32Array.of(1, 20, 31);
    const a = stage.newSession(32);
    let out = await stage.forward(a, { tokens: prompt });
    const argmax = (l: Float32Array) => l.reduce((b, v, i) => (v > l[b] ? i : b), 0);
    const first = argmax((out as { logits: Float32Array }).logits);
    const want: number[] = [];
    const sums: number[] = [];
    let id = first;
    for (let j = 0; j < 6; j++) {
      out = await stage.forward(a, { tokens: Int32Array.of(id) });
      const l = (out as { logits: Float32Array }).logits;
      id = argmax(l);
      want.push(id);
      const max = l[id];
      sums.push(l.reduce((s, v) => Math.fround(s + Math.fround(Math.exp(v - max))), 0));
    }
    const b = stage.newSession(32);
    await stage.forward(b, { tokens: prompt });
    const run = await stage.decodeGreedy(b, first, 6, 2);
    assertEquals(run.map((c) => c.ids[0]), want);
    // Σ e^(v − max) as the host computes candidates (in double), near the float32 sum.
    run.forEach((c, j) => assert(Math.abs(c.sumExp - sums[j]) <= 1e-5 * sums[j], `step ${j}`));
    for (const c of run) assertEquals(c.ids.length, 2);
    assertEquals(b.pos, prompt.length + 6);
    // Bad arguments are refused before anything runs.
    await assertRejects(() => stage.decodeGreedy(b, 1, -1), StageInputError);
    await assertRejects(() => stage.decodeGreedy(b, 10_000_000, 1), StageInputError);
    await assertRejects(() => stage.decodeGreedy(b, 1, 32), StageInputError);
    assertEquals(b.pos, prompt.length + 6);
  } finally {
    stage.dispose();
    be.dispose();
  }
});
