/**
 * Batching invariance, for any backend: sessions run together in one forwardBatch give exactly
 * the logits and hidden states they give alone (continuous batching must not change results).
 */
import type { Backend } from "../../kernels/backend.ts";
import { openGGUF } from "../../model/gguf/mod.ts";
import { LlamaStage, type StageOutput } from "../../model/llama.ts";
import { assertEquals } from "./assert.ts";
import { FIXTURES } from "./paths.ts";

const PROMPTS = [[1, 300, 301, 302], [1, 17], [1, 40, 41, 42, 43, 44, 45], [1, 5, 9]];

function bits(o: StageOutput): number[] {
  const a = "logits" in o ? o.logits : o.hidden;
  return Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));
}

/** Register batching-invariance tests for `makeBackend` over fixture models of each architecture. */
export function batchingTests(
  label: string,
  makeBackend: () => Promise<Backend>,
  opts: { ignore?: boolean } = {},
): void {
  // the newer architectures too: MoE rows regrouped per expert, fused-weight views, GELU
  const models = ["stories260K.gguf", "tiny-q8_0.gguf", "kq-q4_k_m.gguf"];
  models.push("qwen3moe-q4_0.gguf", "gemma3-q8_0.gguf", "phi3-q4_0.gguf");
  for (const model of models) {
    Deno.test({
      name: `${label}: batched sessions equal solo sessions bit for bit (${model})`,
      ignore: opts.ignore,
      fn: async () => {
        const file = await openGGUF(`${FIXTURES}/models/${model}`);
        const backend = await makeBackend();
        try {
          for (const [from, to] of [[0, 1], [0, 2]] as const) {
            const stage = await LlamaStage.load(file, backend, {
              from,
              to: Math.min(to, 2),
              maxBatch: 32,
            });
            const vocab = stage.config.nVocab;
            const prompts = PROMPTS.map((p) => p.map((id) => id % vocab));
            // Solo: each session alone, prefill then three decode steps.
            const solo: number[][] = [];
            for (const p of prompts) {
              const s = stage.newSession(64);
              let input = Int32Array.from(p);
              for (let step = 0; step < 4; step++) {
                const out = await stage.forward(s, { tokens: input });
                solo.push(bits(out));
                input = Int32Array.of((p[0] + step * 7 + 3) % vocab);
              }
              stage.endSession(s);
            }
            // Batched: the same steps with every session in one pass per step.
            const sessions = prompts.map(() => stage.newSession(64));
            const batched: number[][][] = prompts.map(() => []);
            let inputs = prompts.map((p) => Int32Array.from(p));
            for (let step = 0; step < 4; step++) {
              const outs = await stage.forwardBatch(
                sessions.map((session, i) => ({ session, input: { tokens: inputs[i] } })),
              );
              outs.forEach((o, i) => batched[i].push(bits(o)));
              inputs = prompts.map((p) => Int32Array.of((p[0] + step * 7 + 3) % vocab));
            }
            assertEquals(batched.flat(), solo, `stage [${from}, ${to}) of ${model}`);
          }
        } finally {
          backend.dispose();
          file.close();
        }
      },
    });
  }
}
