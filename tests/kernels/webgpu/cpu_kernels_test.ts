/**
 * The kernels shaped for CPU-run shaders (the `cpuKernels` option). The matmul (matmul_cpu.wgsl: 16-byte loads, several weight and
 * activation rows per invocation), forced on whatever this adapter's default: for every type it
 * covers it must equal matmul.wgsl's single-lane kernel and the reference backend bit for bit,
 * with row counts that leave partial register tiles, weight row views (fused tensors), weights
 * split over several bindings (each read through its own texture copy), and row lengths it does
 * not cover (which fall back). Attention
 * (attention_cpu.wgsl, f32 cache) must equal attention.wgsl bit for bit.
 */
import { GGMLType, typeName } from "../../../kernels/quant/mod.ts";
import { createReferenceBackend } from "../../../kernels/reference/mod.ts";
import { createWebGPUBackend, type WebGPUBackend } from "../../../kernels/webgpu/mod.ts";
import { CPU_TILE } from "../../../kernels/webgpu/ops/matmul.ts";
import { cpuMatmulFits } from "../../../kernels/webgpu/ops/matmul_cpu.ts";
import { assert, assertEquals } from "../../support/assert.ts";
import { bufOf, ignore, randomFloats, randomWeight } from "./helpers.ts";

const TYPES = [GGMLType.Q8_0];

const backends: Record<string, WebGPUBackend> = ignore ? {} : {
  cpu: await createWebGPUBackend({ matmulLanes: "single", tiledPrefill: false, cpuKernels: true }),
  // Small bindings: weights of a few KiB split into several parts, one dispatch each.
  cpuSplit: await createWebGPUBackend({
    matmulLanes: "single",
    tiledPrefill: false,
    cpuKernels: true,
    maxBindingBytes: 16 * 1024,
  }),
  plain: await createWebGPUBackend({
    matmulLanes: "single",
    tiledPrefill: false,
    cpuKernels: false,
  }),
};
const ref = createReferenceBackend();

Deno.test({
  ignore,
  name: "webgpu cpu kernels: startup check, and which matmul shapes they cover",
  fn: () => {
    // Asked for, so the startup check ran and passed (it compares the same bits).
    const { cpuKernels, cpuKernelsCheck } = backends.cpu.info;
    assert(cpuKernels && cpuKernelsCheck.startsWith("match"), cpuKernelsCheck);
    assertEquals(backends.plain.info.cpuKernelsCheck, "", "not asked for: not checked");
    assert(cpuMatmulFits(GGMLType.Q8_0, 768));
    assert(cpuMatmulFits(GGMLType.Q8_0, 256));
    assert(!cpuMatmulFits(GGMLType.Q8_0, 288), "rows of 9 blocks are not whole groups");
    assert(!cpuMatmulFits(GGMLType.Q4_0, 256), "other types keep matmul.wgsl");
  },
});

for (const type of TYPES) {
  Deno.test({
    ignore,
    name: `webgpu cpu matmul ${typeName(type)}: single-lane kernel and reference bit for bit`,
    fn: async () => {
      const all = [...Object.values(backends), ref];
      for (
        const [k, rows, nOut] of [[768, 1, 37], [256, 3, 70], [512, 5, 33], [1024, 17, 45], [
          288,
          2,
          9,
        ]]
      ) {
        const ws = randomWeight(all, `w${type}`, type, [k, nOut], 31 + type + rows + k);
        // A view of rows 5 .. nOut − 1, as fused q/k/v or gate/up tensors are used.
        const views = ws.map((w, i) => all[i].weightRows(w, 5, nOut - 5));
        const x = randomFloats(rows * k, 7 * type + rows, 2);
        const outs = await Promise.all(all.map(async (be, i) => {
          const xb = bufOf(be, x), ob = be.buffer(rows * nOut), vb = be.buffer(rows * (nOut - 5));
          be.matmul(ws[i], xb, ob, rows);
          be.matmul(views[i], xb, vb, rows);
          const got = [await be.read(ob), await be.read(vb)];
          for (const b of [xb, ob, vb]) be.free(b);
          be.free(ws[i]);
          return got;
        }));
        const want = outs.at(-1)!;
        for (const [i, name] of Object.keys(backends).entries()) {
          const what = `${typeName(type)} k=${k} rows=${rows} ${name}`;
          assertEquals(Array.from(outs[i][0]), Array.from(want[0]), `${what}: = reference`);
          assertEquals(Array.from(outs[i][1]), Array.from(want[1]), `${what} (row view)`);
        }
      }
    },
  });
}

Deno.test({
  ignore,
  name: "webgpu cpu matmul: the storage-binding variant (parts too tall for a texture) bit for bit",
  fn: async () => {
    const { cpu, plain } = backends;
    CPU_TILE.textures = false;
    try {
      for (const [k, rows, nOut] of [[512, 1, 21], [256, 9, 19]]) {
        const ws = randomWeight([cpu, plain], "w", GGMLType.Q8_0, [k, nOut], 17 + rows);
        const x = randomFloats(rows * k, 19 + rows, 2);
        const outs = await Promise.all([cpu, plain].map(async (be, i) => {
          const xb = bufOf(be, x), ob = be.buffer(rows * nOut);
          be.matmul(ws[i], xb, ob, rows);
          const got = await be.read(ob);
          for (const b of [xb, ob, ws[i]]) be.free(b);
          return got;
        }));
        assertEquals(Array.from(outs[0]), Array.from(outs[1]), `k=${k} rows=${rows}`);
      }
    } finally {
      CPU_TILE.textures = true;
    }
  },
});

Deno.test({
  ignore,
  name: "webgpu cpu matmul: a weight freed while its matmul is pending (its texture copy too)",
  fn: async () => {
    const { cpu } = backends;
    const [w] = randomWeight([cpu], "w", GGMLType.Q8_0, [256, 8], 3);
    const x = bufOf(cpu, randomFloats(256, 4)), o = cpu.buffer(8);
    cpu.matmul(w, x, o, 1);
    cpu.free(w); // before the submit that runs it
    const got = await cpu.read(o);
    assert(got.some((v) => v !== 0), "the matmul ran");
    cpu.free(x);
    cpu.free(o);
  },
});

Deno.test({
  ignore,
  name: "webgpu cpu attention: attention.wgsl bit for bit (MHA, GQA, sliding window, odd dims)",
  fn: async () => {
    const { cpu, plain } = backends;
    for (
      const [nHeads, nKVHeads, headDim, window] of [[4, 4, 16, 0], [8, 2, 64, 0], [6, 3, 12, 5], [
        2,
        1,
        13,
        0,
      ]]
    ) {
      const kvDim = nKVHeads * headDim;
      const caches = [cpu, plain].map((be) => be.kvCache(2, 40, kvDim, "f32"));
      const params = { nHeads, nKVHeads, headDim, scale: 1 / Math.sqrt(headDim), window };
      let pos = 0;
      // A prefill of 9 rows (from row offset 2 of a larger batch), then single-row steps.
      for (const [rows, rowOffset] of [[9, 2], [1, 0], [1, 0], [3, 1]]) {
        const n = rowOffset + rows;
        const k = randomFloats(n * kvDim, pos + 1, 1);
        const v = randomFloats(n * kvDim, pos + 2, 1);
        const q = randomFloats(n * nHeads * headDim, pos + 3, 1);
        const outs = await Promise.all([cpu, plain].map(async (be, i) => {
          const [kb, vb, qb, ob] = [bufOf(be, k), bufOf(be, v), bufOf(be, q), be.buffer(q.length)];
          be.storeKV(caches[i], 1, kb, vb, pos, rows, rowOffset);
          be.attention(qb, caches[i], 1, ob, pos, rows, params, rowOffset);
          const got = await be.read(ob);
          for (const b of [kb, vb, qb, ob]) be.free(b);
          return got;
        }));
        assertEquals(
          Array.from(outs[0]),
          Array.from(outs[1]),
          `attention ${nHeads}/${nKVHeads}×${headDim} window ${window} pos ${pos} rows ${rows}`,
        );
        pos += rows;
      }
      cpu.free(caches[0]);
      plain.free(caches[1]);
    }
  },
});

Deno.test({
  ignore,
  name: "webgpu cpu kernels: dispose",
  fn: () => {
    for (const be of Object.values(backends)) be.dispose();
  },
});
