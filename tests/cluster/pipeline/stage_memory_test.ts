/**
 * A stage whose backend memory is full: opening a session gives prefix-cache blocks back until
 * its KV cache fits, and is "exhausted" (the head waits or says busy) when none are left.
 */
import { createWasmBackend } from "../../../kernels/wasm/mod.ts";
import { openGGUF } from "../../../model/gguf/mod.ts";
import { LlamaStage } from "../../../model/llama.ts";
import { StageHost, StageSessionError } from "../../../cluster/pipeline/mod.ts";
import { assert, assertEquals, assertThrows } from "../../support/assert.ts";
import { FIXTURES } from "../../support/paths.ts";

Deno.test("a full backend: prefix blocks make room for a session's KV cache, then 'exhausted'", async () => {
  const file = await openGGUF(`${FIXTURES}/models/tiny-q8_0.gguf`);
  // KV caches, prefix blocks and activations share one 8 MiB memory.
  const be = await createWasmBackend({ threads: 1, memoryCap: 8 << 20 });
  const stage = await LlamaStage.load(file, be, { maxBatch: 64 });
  const host = new StageHost(stage, "m", {
    maxSessions: 1000,
    defaultContext: 256,
    prefixCacheBytes: 2 << 20,
  });
  try {
    // Fill the prefix cache with distinct prompts.
    for (let k = 0; k < 60; k++) {
      const id = `fill${k}`;
      host.open(id);
      const p = Int32Array.from({ length: 200 }, (_, i) => 1 + ((i * 7 + k * 131) % 299));
      host.restorePrefix(id, p);
      await host.step(id, { tokens: p });
      host.close(id);
    }
    const cache = stage.prefixCache!;
    const held = cache.stats().blocks;
    assert(held > 0, "the cache holds blocks");
    let opened = 0;
    const err = assertThrows(() => {
      for (;; opened++) host.open(`s${opened}`);
    }, StageSessionError);
    // Before, a plain Error came while the cache still held every block.
    assertEquals((err as StageSessionError).code, "exhausted");
    assert(err.message.includes("no memory for another session's KV cache"), err.message);
    assert(cache.stats().blocks < held, "blocks were given back for sessions");
    assert(opened > 0);
  } finally {
    host.dispose();
    be.dispose();
    file.close();
  }
});
