/**
 * Handles after free: every backend refuses a freed buffer, a freed KV cache and a row view of a
 * freed weight, and a second free does nothing. Before, WebGPU pooled a freed buffer and a stale
 * handle wrote into its next owner; a WASM view read whatever reused its parent's bytes.
 */
import type { Backend } from "../../kernels/backend.ts";
import { GGMLType } from "../../kernels/quant/types.ts";
import { createWasmBackend } from "../../kernels/wasm/mod.ts";
import { createWebGPUBackend } from "../../kernels/webgpu/mod.ts";
import { assert, assertEquals } from "../support/assert.ts";
import { PROBE } from "./webgpu/helpers.ts";

const backends: [string, () => Promise<Backend>, boolean][] = [
  ["wasm", () => createWasmBackend({ threads: 1 }), false],
  ["webgpu", () => createWebGPUBackend(), !PROBE.available],
];

/** Whether `f` throws (synchronously or as a rejection) an error whose message has `text`. */
async function refuses(f: () => unknown, text: string): Promise<boolean> {
  try {
    await f();
    return false;
  } catch (e) {
    return String((e as Error).message).includes(text);
  }
}

for (const [name, make, ignore] of backends) {
  Deno.test({
    name: `${name}: freed buffers, KV caches and views of freed weights are refused`,
    ignore,
    async fn() {
      const be = await make();
      try {
        const a = be.buffer(64);
        be.free(a);
        be.free(a); // a second free does nothing (it would pool what another owns now)
        const b = be.buffer(64);
        be.write(b, new Float32Array(64).fill(2));
        assert(await refuses(() => be.write(a, new Float32Array(64).fill(3)), "after free"));
        assertEquals((await be.read(b))[0], 2, "the stale handle reached the next buffer");

        const data = new Uint8Array(new Float32Array(64).fill(1).buffer);
        const w = be.upload({ name: "w", type: GGMLType.F32, shape: [8, 8], data });
        const view = be.weightRows(w, 0, 4);
        be.free(w);
        const x = be.buffer(8);
        const out = be.buffer(4);
        assert(await refuses(() => be.matmul(view, x, out, 1), "after free"), "a view outlived");

        const kv = be.kvCache(1, 4, 8, "f32");
        be.free(kv);
        assert(await refuses(() => be.storeKV(kv, 0, x, x, 0, 1), "after free"), "a freed cache");
      } finally {
        be.dispose();
      }
    },
  });
}
