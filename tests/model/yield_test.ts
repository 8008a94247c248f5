/**
 * A forward pass on a CPU backend gives the event loop a turn between layers once it has held
 * the thread for YIELD_AFTER_MS, so an agent busy with a big stage still answers gossip probes
 * and RPC pings (issue 17: an 8B stage's prefill held it for seconds and its peers declared it
 * dead). The logits stay the same.
 */
import { createReferenceBackend } from "../../kernels/reference/mod.ts";
import type { Backend } from "../../kernels/backend.ts";
import { openGGUF } from "../../model/gguf/mod.ts";
import { LlamaStage, YIELD_AFTER_MS } from "../../model/llama.ts";
import { assert, assertEquals } from "../support/assert.ts";
import { REPO } from "../support/paths.ts";

/** The reference backend, with every RMSNorm made slow (a busy thread, as a big matmul is). */
function slowBackend(ms: number): Backend {
  const be = createReferenceBackend();
  const rmsNorm = be.rmsNorm.bind(be);
  be.rmsNorm = (...args: Parameters<Backend["rmsNorm"]>) => {
    const until = performance.now() + ms;
    while (performance.now() < until) { /* busy */ }
    return rmsNorm(...args);
  };
  return be;
}

async function logitsWhileTicking(backend: Backend) {
  const file = await openGGUF(`${REPO}/models/stories260K.gguf`);
  try {
    const stage = await LlamaStage.load(file, backend, {});
    const session = stage.newSession(64, "f32");
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    const out = await stage.forward(session, { tokens: Int32Array.of(1, 403, 407, 261, 378) });
    clearInterval(timer);
    if (!("logits" in out)) throw new Error("expected logits");
    return { logits: Array.from(out.logits), ticks, layers: stage.to - stage.from };
  } finally {
    file.close();
  }
}

Deno.test("a long pass yields to the event loop between layers; logits unchanged", async () => {
  const slow = await logitsWhileTicking(slowBackend(YIELD_AFTER_MS + 10));
  // Every layer (but the first) starts after a turn of the event loop.
  assert(slow.ticks >= slow.layers - 1, `${slow.ticks} timer ticks during the pass`);
  const fast = await logitsWhileTicking(createReferenceBackend());
  assertEquals(slow.logits, fast.logits);
});
