/**
 * Every WebGPU op against the reference backend (ggml's CPU numerics) on random shapes,
 * including odd sizes, every weight type, both RoPE orders, GQA and f32/f16 KV caches.
 * Runs on whatever adapter `navigator.gpu` finds (llvmpipe in CI); skipped without one.
 */
import type { Backend, KVType } from "../../../kernels/backend.ts";
import { GGMLType, typeName, WEIGHT_TYPES } from "../../../kernels/quant/mod.ts";
import { createReferenceBackend } from "../../../kernels/reference/mod.ts";
import { createWebGPUBackend, type WebGPUBackend } from "../../../kernels/webgpu/mod.ts";
import { assert } from "../../support/assert.ts";
import {
  assertClose,
  bufOf,
  ignore,
  maxRelErr,
  PROBE,
  randomFloats,
  randomWeight,
} from "./helpers.ts";

const T = { ignore };

function rowLengths(type: GGMLType): number[] {
  if (type === GGMLType.F32 || type === GGMLType.F16 || type === GGMLType.BF16) return [37, 130];
  if (type >= GGMLType.Q2_K && type <= GGMLType.Q6_K) return [256, 768];
  return [64, 160];
}

/**
 * Matmul of every weight type against the reference. Activation quantization divides by the
 * block maximum; a GPU division may differ from the CPU's in the last bit and move one quantized
 * activation by one step, so results are compared with a small tolerance, not bit for bit.
 */
async function checkMatmul(
  gpu: Backend,
  ref: Backend,
  type: GGMLType,
  seed: number,
  shapes = [[1, 33], [3, 7], [11, 65]],
) {
  for (const k of rowLengths(type)) {
    for (const [rows, nOut] of shapes) {
      const [wg, wr] = randomWeight([gpu, ref], `w${seed}`, type, [k, nOut], seed + k);
      const x = randomFloats(rows * k, seed * 7 + rows, 2);
      const xg = bufOf(gpu, x), xr = bufOf(ref, x);
      const og = gpu.buffer(rows * nOut), or = ref.buffer(rows * nOut);
      gpu.matmul(wg, xg, og, rows);
      ref.matmul(wr, xr, or, rows);
      const got = await gpu.read(og);
      const want = await ref.read(or);
      const err = maxRelErr(got, want);
      assert(
        err <= 1e-4,
        `matmul ${typeName(type)} k=${k} rows=${rows} out=${nOut}: max rel error ${err}`,
      );
      for (const b of [xg, og]) gpu.free(b);
      gpu.free(wg);
    }
  }
}

// Created at load (not in a test) so that any test can run alone with --filter.
// `alt` takes the other path of both choices: many lanes per weight row summed in workgroup
// memory (what real GPUs use; llvmpipe defaults to one lane per row) and the plain-integer
// dot product instead of dot4I8Packed.
const [gpu, alt]: WebGPUBackend[] = ignore ? [] : await Promise.all([
  createWebGPUBackend(),
  createWebGPUBackend({ packedDot: false, matmulLanes: "shared" }),
]);
const ref = createReferenceBackend();

Deno.test({
  ...T,
  name: "webgpu: backends on this machine's adapter",
  fn: () => {
    console.log(
      `adapter: ${gpu.device}; using: ${gpu.info.using.join(", ") || "core WGSL only"}; ` +
        `matmul lanes: ${gpu.info.matmulLanes}`,
    );
    assert(gpu.name === "webgpu");
    assert(gpu.device.length > 0);
    assert(alt.info.using.length === 0);
  },
});

for (const type of WEIGHT_TYPES) {
  Deno.test({
    ...T,
    name: `webgpu: matmul ${typeName(type)} (odd row counts, 1/3/11 activation rows)`,
    fn: async () => {
      await checkMatmul(gpu, ref, type, 100 + type);
      await checkMatmul(alt, ref, type, 200 + type, [[3, 7], [9, 65]]);
    },
  });
}

Deno.test({
  ...T,
  name: "webgpu: weights larger than the binding limit are split by rows (matmul, embed)",
  fn: async () => {
    const tiny = await createWebGPUBackend({ maxBindingBytes: 1024 });
    try {
      for (const type of [GGMLType.F32, GGMLType.Q8_0, GGMLType.Q4_K, GGMLType.Q6_K]) {
        const k = rowLengths(type)[0];
        // 1024-byte parts hold 1..7 rows here, so 50 rows take many parts (and a 210-byte Q6_K
        // row cannot start a part on a 4-byte boundary of the tensor).
        await checkMatmul(tiny, ref, type, 400 + type, [[2, 50], [9, 23]]);
        const [wg, wr] = randomWeight([tiny, ref], "tok", type, [k, 50], 9);
        const ids = Int32Array.from([49, 0, 17, 33, 1]);
        const og = tiny.buffer(ids.length * k), or = ref.buffer(ids.length * k);
        tiny.embed(wg, ids, og);
        ref.embed(wr, ids, or);
        assertClose(await tiny.read(og), await ref.read(or), 0, `split embed ${typeName(type)}`);
      }
    } finally {
      tiny.dispose();
    }
  },
});

Deno.test({
  ...T,
  name: "webgpu: embed every weight type (ggml_get_rows)",
  fn: async () => {
    for (const type of WEIGHT_TYPES) {
      const k = rowLengths(type)[0];
      const [wg, wr] = randomWeight([gpu, ref], "tok", type, [k, 19], 5 + type);
      const ids = Int32Array.from([3, 0, 18, 3, 7]);
      const og = gpu.buffer(ids.length * k), or = ref.buffer(ids.length * k);
      gpu.embed(wg, ids, og);
      ref.embed(wr, ids, or);
      assertClose(await gpu.read(og), await ref.read(or), 0, `embed ${typeName(type)}`);
    }
  },
});

Deno.test({
  ...T,
  name: "webgpu: rmsNorm (f32 and f16 weights) and addBias",
  fn: async () => {
    // Widths that are not powers of two make the mean's division round: bit for bit only when
    // it rounds once from the double sum, as ggml's does (896, 2560: 5-14% of rows missed).
    for (const [n, rows] of [[64, 1], [37, 5], [300, 3], [896, 64], [2560, 64]]) {
      for (const type of [GGMLType.F32, GGMLType.F16]) {
        const [wg, wr] = randomWeight([gpu, ref], "norm", type, [n], n);
        const x = randomFloats(rows * n, n + rows, 3);
        const xg = bufOf(gpu, x), xr = bufOf(ref, x);
        const og = gpu.buffer(rows * n), or = ref.buffer(rows * n);
        gpu.rmsNorm(xg, wg, og, rows, 1e-5);
        ref.rmsNorm(xr, wr, or, rows, 1e-5);
        assertClose(await gpu.read(og), await ref.read(or), 0, `rmsNorm n=${n}`);
        gpu.addBias(og, wg, rows);
        ref.addBias(or, wr, rows);
        assertClose(await gpu.read(og), await ref.read(or), 0, `addBias n=${n}`);
      }
    }
  },
});

Deno.test({
  ...T,
  name: "webgpu: rope, normal and NEOX order, partial rotation, scaled frequencies",
  fn: async () => {
    const cases = [
      { nHeads: 4, headDim: 16, ropeDim: 16, freqBase: 10000, freqScale: 1 },
      { nHeads: 3, headDim: 64, ropeDim: 32, freqBase: 1e6, freqScale: 0.25 },
      { nHeads: 2, headDim: 128, ropeDim: 128, freqBase: 500000, freqScale: 1 },
    ];
    for (const c of cases) {
      for (const neox of [false, true]) {
        const positions = Int32Array.from([0, 1, 5, 17, 200]);
        const x = randomFloats(positions.length * c.nHeads * c.headDim, c.headDim, 1);
        const xg = bufOf(gpu, x), xr = bufOf(ref, x);
        const p = { ...c, neox };
        gpu.rope(xg, positions, p);
        ref.rope(xr, positions, p);
        assertClose(await gpu.read(xg), await ref.read(xr), 0, `rope ${JSON.stringify(p)}`);
      }
    }
  },
});

Deno.test({
  ...T,
  name: "webgpu: swiglu and add (also in place)",
  fn: async () => {
    for (const n of [1, 63, 1000]) {
      const g = randomFloats(n, n, 4), u = randomFloats(n, n + 1, 2);
      const [gg, ug, og] = [bufOf(gpu, g), bufOf(gpu, u), gpu.buffer(n)];
      const [gr, ur, or] = [bufOf(ref, g), bufOf(ref, u), ref.buffer(n)];
      gpu.swiglu(gg, ug, og, n);
      ref.swiglu(gr, ur, or, n);
      assertClose(await gpu.read(og), await ref.read(or), 0, `swiglu n=${n}`);
      gpu.swiglu(gg, ug, gg, n);
      ref.swiglu(gr, ur, gr, n);
      assertClose(await gpu.read(gg), await ref.read(gr), 1e-6, `swiglu in place n=${n}`);
      gpu.add(og, ug, n);
      ref.add(or, ur, n);
      assertClose(await gpu.read(og), await ref.read(or), 0, `add n=${n}`);
    }
  },
});

async function checkAttention(
  type: KVType,
  nHeads: number,
  nKVHeads: number,
  headDim: number,
  gpu: Backend,
) {
  const kvDim = nKVHeads * headDim;
  const nCtx = 40;
  const cg = gpu.kvCache(2, nCtx, kvDim, type);
  const cr = ref.kvCache(2, nCtx, kvDim, type);
  const params = { nHeads, nKVHeads, headDim, scale: 1 / Math.sqrt(headDim) };
  // A prefill of 9 rows (stored from row offset 2 of a larger batch), then 3 single-row steps.
  let pos = 0;
  for (const [rows, rowOffset] of [[9, 2], [1, 0], [1, 0], [1, 0]]) {
    const n = rowOffset + rows;
    const k = randomFloats(n * kvDim, pos + 1, 1);
    const v = randomFloats(n * kvDim, pos + 2, 1);
    const q = randomFloats(n * nHeads * headDim, pos + 3, 1);
    const [kg, vg, qg, og] = [bufOf(gpu, k), bufOf(gpu, v), bufOf(gpu, q), gpu.buffer(q.length)];
    const [kr, vr, qr, or] = [bufOf(ref, k), bufOf(ref, v), bufOf(ref, q), ref.buffer(q.length)];
    gpu.storeKV(cg, 1, kg, vg, pos, rows, rowOffset);
    ref.storeKV(cr, 1, kr, vr, pos, rows, rowOffset);
    gpu.attention(qg, cg, 1, og, pos, rows, params, rowOffset);
    ref.attention(qr, cr, 1, or, pos, rows, params, rowOffset);
    // Bit for bit: the softmax's 1 / sum is rounded once, as from ggml's double (a float
    // residual 1 − c·sum without a fused multiply-add missed it for 21% of sums).
    assertClose(
      await gpu.read(og),
      await ref.read(or),
      0,
      `attention ${type} heads ${nHeads}/${nKVHeads}×${headDim} pos ${pos} rows ${rows}`,
    );
    pos += rows;
    for (const b of [kg, vg, qg, og]) gpu.free(b);
  }
  gpu.free(cg);
}

for (const type of ["f32", "f16"] as const) {
  Deno.test({
    ...T,
    name: `webgpu: storeKV + attention, ${type} cache, MHA and GQA, odd head dim`,
    fn: async () => {
      await checkAttention(type, 4, 4, 16, gpu);
      await checkAttention(type, 8, 2, 64, gpu);
      await checkAttention(type, 6, 3, 13, gpu);
    },
  });
}

Deno.test({
  ...T,
  name: "webgpu: attention of a long prefill runs in row chunks under a scratch cap",
  fn: async () => {
    // 600 bytes hold the scores of 1..4 query rows here, so the 9-row prefill takes 3+ chunks.
    const capped = await createWebGPUBackend({ attentionScratchBytes: 600 });
    try {
      await checkAttention("f32", 4, 2, 16, capped);
      await checkAttention("f16", 2, 1, 8, capped);
    } finally {
      capped.dispose();
    }
  },
});

Deno.test({
  ...T,
  name: "webgpu: read of a range, write at an offset",
  fn: async () => {
    const b = gpu.buffer(10);
    gpu.write(b, Float32Array.from([1, 2, 3]), 4);
    const all = await gpu.read(b);
    assert(all.join() === "0,0,0,0,1,2,3,0,0,0", `got ${all.join()}`);
    const part = await gpu.read(b, 5, 2);
    assert(part.join() === "2,3", `got ${part.join()}`);
    gpu.free(b);
    const again = gpu.buffer(10);
    assert((await gpu.read(again)).every((v) => v === 0), "a pooled buffer comes back zeroed");
  },
});

Deno.test({
  ...T,
  name: "webgpu: dispose",
  fn: () => {
    gpu.dispose();
    alt.dispose();
    console.log(`features offered by ${PROBE.description}: ${PROBE.features.join(", ")}`);
  },
});
