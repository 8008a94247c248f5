/**
 * A whole forward pass on WASM is bit-identical to the reference backend: every fixture model
 * (every architecture and weight type, the K-quant mixes included), a 9-token prompt and 4 decode
 * steps, all logits compared bit for bit. Matmuls alone being exact is not enough: a last-bit
 * difference anywhere (norm, RoPE, softmax, SiLU, attention sums) can flip one activation
 * quantization step and move the logits by 0.03 (seen on a Q3_K_M mix before every op was exact).
 */
import type { Backend } from "../../../kernels/backend.ts";
import { createReferenceBackend } from "../../../kernels/reference/mod.ts";
import { createWasmBackend } from "../../../kernels/wasm/mod.ts";
import { openGGUF } from "../../../model/gguf/mod.ts";
import { LlamaStage } from "../../../model/llama.ts";
import { FIXTURES } from "../../support/paths.ts";

const MODELS = [...Deno.readDirSync(`${FIXTURES}/models`)]
  .map((e) => e.name)
  .filter((n) => n.endsWith(".gguf"))
  .sort();

/** Prefill of 9 tokens, then 4 single-token steps; every step's logits, concatenated. */
async function run(path: string, be: Backend): Promise<Float32Array[]> {
  const file = await openGGUF(path);
  let stage: LlamaStage;
  try {
    stage = await LlamaStage.load(file, be, { maxBatch: 16 });
  } finally {
    file.close();
  }
  const V = stage.config.nVocab;
  const session = stage.newSession(32);
  const out: Float32Array[] = [];
  let o = await stage.forward(session, {
    tokens: Int32Array.from({ length: 9 }, (_, i) => (1 + i * 37) % V),
  });
  for (let i = 0; i < 5; i++) {
    if (!("logits" in o)) throw new Error("expected logits");
    out.push(o.logits);
    if (i < 4) o = await stage.forward(session, { tokens: Int32Array.of((5 + 11 * i) % V) });
  }
  stage.endSession(session);
  stage.dispose();
  return out;
}

for (const name of MODELS) {
  Deno.test(`wasm forward of ${name} is bit-identical to the reference`, async () => {
    const ref = createReferenceBackend();
    const wasm = await createWasmBackend({ threads: 2 });
    try {
      const want = await run(`${FIXTURES}/models/${name}`, ref);
      const got = await run(`${FIXTURES}/models/${name}`, wasm);
      for (let s = 0; s < want.length; s++) {
        for (let i = 0; i < want[s].length; i++) {
          if (!Object.is(got[s][i], want[s][i])) {
            throw new Error(
              `${name} step ${s} logit ${i}: wasm ${got[s][i]}, reference ${want[s][i]}`,
            );
          }
        }
      }
    } finally {
      wasm.dispose();
      ref.dispose();
    }
  });
}
