/**
 * Calls every backend refuses the same way, and shapes every backend computes alike. The WASM
 * backend's buffers share one linear memory: before these checks, a negative offset or a
 * fractional count there read or overwrote a neighbouring buffer instead of failing.
 */
import { GGMLType, quantizeRow } from "../../kernels/quant/mod.ts";
import { createReferenceBackend } from "../../kernels/reference/mod.ts";
import { createWebGPUBackend } from "../../kernels/webgpu/mod.ts";
import { assert, assertEquals } from "../support/assert.ts";
import { PROBE } from "./webgpu/helpers.ts";
import { everyBackend } from "../support/backends.ts";

const backends = everyBackend(1);

/** The message `f` throws with (synchronously or as a rejection), or "" when it does not. */
async function thrown(f: () => unknown): Promise<string> {
  try {
    await f();
    return "";
  } catch (e) {
    return String((e as Error).message);
  }
}

const wave = (n: number, s: number) =>
  Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + s));

for (const [name, make, ignore] of backends) {
  Deno.test({
    name: `${name}: negative offsets and fractional counts are refused, neighbours untouched`,
    ignore,
    async fn() {
      const be = await make();
      try {
        const before = be.buffer(64);
        be.write(before, new Float32Array(64).fill(7));
        const x = be.buffer(64);
        const cache = be.kvCache(2, 8, 16, "f32");
        const p = { nHeads: 2, nKVHeads: 1, headDim: 16, scale: 0.25, window: 0 };
        const refused = [
          await thrown(() => be.write(x, new Float32Array(4).fill(9), -4)),
          await thrown(() => be.read(x, -4, 8)),
          await thrown(() => be.storeKV(cache, 0, x, x, 0, 1, -1)),
          await thrown(() => be.attention(x, cache, 0, x, 0, 1, p, -1)),
          await thrown(() => be.attention(x, cache, 0, x, -1, 1, p)),
          await thrown(() => be.storeKV(cache, 1.5, x, x, 0, 1)),
          await thrown(() => be.sumRowGroups(x, before, 1.5, 1, 16)),
        ];
        for (const [i, m] of refused.entries()) assert(m !== "", `call ${i} was accepted`);
        // Before, the WASM backend wrote these calls' bytes over `before`.
        assertEquals([...await be.read(before)], new Array(64).fill(7));
      } finally {
        be.dispose();
      }
    },
  });

  Deno.test({
    name: `${name}: a one-row K-quant matrix multiplies like the reference`,
    ignore,
    async fn() {
      const ref = createReferenceBackend();
      const be = await make();
      try {
        for (const type of [GGMLType.Q4_K, GGMLType.Q6_K]) {
          const spec = {
            name: "w",
            type,
            shape: [256, 1],
            data: quantizeRow(type, wave(256, 1), 256),
          };
          const out: number[] = [];
          for (const b of [ref, be]) {
            const w = b.upload(spec);
            const x = b.buffer(256);
            b.write(x, wave(256, 2));
            const o = b.buffer(1);
            b.matmul(w, x, o, 1);
            out.push((await b.read(o))[0]);
          }
          // Before, WASM skipped the repack its K-quant kernels read: 3.09 against 69.44.
          assert(Math.abs(out[0] - out[1]) < 1e-3 * Math.abs(out[0]), `${GGMLType[type]}: ${out}`);
        }
      } finally {
        be.dispose();
      }
    },
  });
}

Deno.test({
  name: "webgpu: addBias and rmsNorm of a row view not at row 0 are refused, not read from row 0",
  ignore: !PROBE.available,
  async fn() {
    const be = await createWebGPUBackend();
    try {
      const table = new Float32Array(4 * 8).map((_, i) => (Math.floor(i / 8) + 1) * 10);
      const w = be.upload({
        name: "bias",
        type: GGMLType.F32,
        shape: [8, 4],
        data: new Uint8Array(table.buffer),
      });
      const row2 = be.weightRows(w, 2, 1);
      const x = be.buffer(8);
      assert((await thrown(() => be.addBias(x, row2, 1))).includes("row view"));
      assert((await thrown(() => be.rmsNorm(x, row2, x, 1, 1e-5))).includes("row view"));
    } finally {
      be.dispose();
    }
  },
});
