/**
 * A pass gives the event loop a turn between layers (YIELD_AFTER_MS), so two callers may start
 * passes on one stage at once; they share the workspace buffers and must run one after another:
 * each gets the logits it would get alone.
 */
import { createReferenceBackend } from "../../kernels/reference/mod.ts";
import { openGGUF } from "../../model/gguf/mod.ts";
import { LlamaStage } from "../../model/llama.ts";
import { assert } from "../support/assert.ts";
import { FIXTURES } from "../support/paths.ts";

Deno.test("llama stage: concurrent forward calls give each the logits it gets alone", async () => {
  const file = await openGGUF(`${FIXTURES}/models/qwen3-q8_0.gguf`);
  // The reference backend is slow enough that a 48-token pass holds the thread past 50 ms.
  const stage = await LlamaStage.load(file, createReferenceBackend(), { maxBatch: 64 });
  try {
    const V = stage.config.nVocab;
    const prompts = [1, 2, 3].map((k) =>
      Int32Array.from({ length: 48 }, (_, i) => 1 + (i * 31 + k * 17) % (V - 1))
    );
    const alone: Float32Array[] = [];
    for (const p of prompts) {
      const s = stage.newSession(64);
      const out = await stage.forward(s, { tokens: p });
      if (!("logits" in out)) throw new Error("expected logits");
      alone.push(out.logits);
      stage.endSession(s);
    }
    const sessions = prompts.map(() => stage.newSession(64));
    const outs = await Promise.all(
      prompts.map((p, i) => stage.forward(sessions[i], { tokens: p })),
    );
    outs.forEach((out, k) => {
      if (!("logits" in out)) throw new Error("expected logits");
      for (let i = 0; i < out.logits.length; i++) {
        assert(Object.is(out.logits[i], alone[k][i]), `prompt ${k}, logit ${i}`);
      }
    });
    for (const s of sessions) stage.endSession(s);
  } finally {
    stage.dispose();
    file.close();
  }
});
