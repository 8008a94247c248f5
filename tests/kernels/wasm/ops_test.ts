/**
 * Every op of the WASM backend against the reference backend on random shapes, odd sizes
 * included (rows not a multiple of 4 or of the thread count, odd row lengths for float types),
 * for every weight type, with 1, 2 and 3 threads. Matmuls of every type must be bit-identical (ggml's
 * integer dot products and float steps; f32/f16/bf16 products summed in double).
 */
import type { Backend, KVCache, KVType } from "../../../kernels/backend.ts";
import { GGMLType } from "../../../kernels/quant/mod.ts";
import { createReferenceBackend } from "../../../kernels/reference/mod.ts";
import type { Kernels } from "../../../kernels/wasm/kernels.ts";
import { dotReadsUnsigned } from "../../../kernels/wasm/matmul.ts";
import { createWasmBackend } from "../../../kernels/wasm/mod.ts";
import { assertEquals, assertRejects, assertThrows } from "../../support/assert.ts";
import { assertClose, bufOf, rand, WEIGHT_TYPES, weightBytes } from "./helpers.ts";

async function withBackends(
  threads: number,
  fn: (wasm: Backend, ref: Backend) => Promise<void>,
): Promise<void> {
  const wasm = await createWasmBackend({ threads });
  const ref = createReferenceBackend();
  try {
    await fn(wasm, ref);
  } finally {
    wasm.dispose();
    ref.dispose();
  }
}

async function compareMatmul(
  wasm: Backend,
  ref: Backend,
  type: GGMLType,
  name: string,
  n: number,
  m: number,
  rows: number,
  seed: number,
): Promise<void> {
  const data = weightBytes(type, n, m, seed);
  const spec = { name: `w_${name}_${n}x${m}`, type, shape: [n, m], data };
  const ww = wasm.upload(spec);
  const wr = ref.upload(spec);
  const x = rand(rows * n, seed + 1, 2);
  const xw = bufOf(wasm, x);
  const xr = bufOf(ref, x);
  const ow = wasm.buffer(rows * m);
  const or = ref.buffer(rows * m);
  wasm.matmul(ww, xw, ow, rows);
  ref.matmul(wr, xr, or, rows);
  const tol = 0; // every type, floats included, is bit-identical (ggml's scalar sums)
  assertClose(
    await wasm.read(ow),
    await ref.read(or),
    tol,
    `matmul ${name} n=${n} m=${m} rows=${rows}`,
  );
  // second call on the same input reuses the converted activations
  wasm.matmul(ww, xw, ow, rows);
  assertClose(await wasm.read(ow), await ref.read(or), tol, `matmul ${name} (cached activations)`);
  for (const b of [xw, ow]) wasm.free(b);
  wasm.free(ww);
}

for (const threads of [1, 2]) {
  Deno.test(`wasm matmul: every weight type vs reference (threads ${threads})`, async () => {
    await withBackends(threads, async (wasm, ref) => {
      let seed = 100 * threads;
      for (const { type, name, block } of WEIGHT_TYPES) {
        // n: a few blocks (plus an odd count for float types); m: not a multiple of 4 or threads
        const ns = block === 1 ? [37, 300] : block === 32 ? [96, 320] : [256, 768];
        for (const n of ns) {
          for (const [m, rows] of [[13, 1], [70, 5], [9, 3], [21, 12]]) {
            await compareMatmul(wasm, ref, type, name, n, m, rows, seed++);
          }
        }
      }
    });
  });
}

for (const threads of [2, 3]) {
  Deno.test(`wasm matmul: split across ${threads} threads, prefill rows`, async () => {
    await withBackends(threads, async (wasm, ref) => {
      for (const { type, name } of WEIGHT_TYPES) {
        await compareMatmul(wasm, ref, type, name, 512, 133, 7, 7000 + type);
      }
    });
  });
}

Deno.test("wasm elementwise ops vs reference", async () => {
  await withBackends(2, async (wasm, ref) => {
    for (const n of [1, 7, 64, 173]) {
      const rows = 3;
      const g = rand(n, 1, 1.5);
      const spec = {
        name: "norm",
        type: GGMLType.F32,
        shape: [n],
        data: new Uint8Array(g.buffer.slice(0)),
      };
      const ww = wasm.upload(spec);
      const wr = ref.upload(spec);
      const x = rand(rows * n, 2, 3);
      const xw = bufOf(wasm, x);
      const xr = bufOf(ref, x);
      const ow = wasm.buffer(rows * n);
      const or = ref.buffer(rows * n);
      wasm.rmsNorm(xw, ww, ow, rows, 1e-5);
      ref.rmsNorm(xr, wr, or, rows, 1e-5);
      assertClose(await wasm.read(ow), await ref.read(or), 0, `rmsNorm n=${n}`);

      wasm.addBias(xw, ww, rows);
      ref.addBias(xr, wr, rows);
      assertClose(await wasm.read(xw), await ref.read(xr), 0, `addBias n=${n}`);

      const y = rand(rows * n, 3, 4);
      const yw = bufOf(wasm, y);
      const yr = bufOf(ref, y);
      wasm.swiglu(xw, yw, ow, rows * n);
      ref.swiglu(xr, yr, or, rows * n);
      assertClose(await wasm.read(ow), await ref.read(or), 0, `swiglu n=${n}`);

      wasm.add(xw, yw, rows * n);
      ref.add(xr, yr, rows * n);
      assertClose(await wasm.read(xw), await ref.read(xr), 0, `add n=${n}`);
    }
  });
});

Deno.test("wasm embed (every type) vs reference: bit-identical dequantization", async () => {
  await withBackends(1, async (wasm, ref) => {
    // K-quants also at an odd super-block count (Q6_K's layout pairs super-blocks)
    for (const { type, name, block } of WEIGHT_TYPES) {
      for (const n of block === 256 ? [512, 768] : block === 32 ? [96] : [45]) {
        const data = weightBytes(type, n, 11, 50 + type);
        const spec = { name: `tok_${name}`, type, shape: [n, 11], data };
        const ww = wasm.upload(spec);
        const wr = ref.upload(spec);
        const ids = new Int32Array([3, 0, 10, 3, 6]);
        const ow = wasm.buffer(ids.length * n);
        const or = ref.buffer(ids.length * n);
        wasm.embed(ww, ids, ow);
        ref.embed(wr, ids, or);
        assertClose(await wasm.read(ow), await ref.read(or), 0, `embed ${name} n=${n}`);
      }
    }
  });
});

Deno.test("wasm rope (normal and NEOX, partial rotation) vs reference", async () => {
  await withBackends(1, async (wasm, ref) => {
    for (const neox of [false, true]) {
      for (const [nHeads, headDim, ropeDim] of [[4, 16, 16], [3, 10, 6], [2, 64, 64]]) {
        const positions = new Int32Array([0, 1, 7, 250]);
        const x = rand(positions.length * nHeads * headDim, 9, 2);
        const xw = bufOf(wasm, x);
        const xr = bufOf(ref, x);
        const p = { nHeads, headDim, ropeDim, freqBase: 10000, freqScale: 1, neox };
        wasm.rope(xw, positions, p);
        ref.rope(xr, positions, p);
        assertClose(await wasm.read(xw), await ref.read(xr), 0, `rope neox=${neox} ${headDim}`);
        const p2 = { ...p, freqBase: 1e6, freqScale: 0.25 };
        wasm.rope(xw, positions, p2);
        ref.rope(xr, positions, p2);
        assertClose(await wasm.read(xw), await ref.read(xr), 0, `rope scaled neox=${neox}`);
      }
    }
  });
});

/** Both element types, each with the WASM cache's rows of every head and head by head. */
const KV_LAYOUTS = [["f32", false], ["f16", false], ["f32", true], ["f16", true]] as const;

/** A WASM KV cache (head by head when `byHead`) and the reference's, of the same shape. */
function kvCaches(
  wasm: Backend,
  ref: Backend,
  nLayers: number,
  nCtx: number,
  nKV: number,
  headDim: number,
  type: KVType,
  byHead: boolean,
): [KVCache, KVCache] {
  const kvDim = nKV * headDim;
  return [
    wasm.kvCache(nLayers, nCtx, kvDim, type, byHead ? headDim : undefined),
    ref.kvCache(nLayers, nCtx, kvDim, type),
  ];
}

for (const threads of [1, 2]) {
  Deno.test(`wasm attention over f32 and f16 KV caches, rows of every head or head by head, vs reference (threads ${threads})`, async () => {
    await withBackends(threads, async (wasm, ref) => {
      for (const [type, byHead] of KV_LAYOUTS) {
        for (const [nHeads, nKV, headDim] of [[4, 2, 16], [6, 6, 7], [8, 2, 64]]) {
          const kvDim = nKV * headDim;
          const [cw, cr] = kvCaches(wasm, ref, 2, 80, nKV, headDim, type, byHead);
          const params = { nHeads, nKVHeads: nKV, headDim, scale: 1 / Math.sqrt(headDim) };
          // prefill 37 rows (from row offset 2 of the buffers), then decode 2 single rows
          let pos = 0;
          for (const rows of [37, 1, 1]) {
            const off = rows > 1 ? 2 : 0;
            const k = rand((rows + off) * kvDim, 20 + pos, 1.5);
            const v = rand((rows + off) * kvDim, 30 + pos, 1.5);
            const q = rand((rows + off) * nHeads * headDim, 40 + pos, 1.5);
            const [kw, vw, qw] = [bufOf(wasm, k), bufOf(wasm, v), bufOf(wasm, q)];
            const [kr, vr, qr] = [bufOf(ref, k), bufOf(ref, v), bufOf(ref, q)];
            const ow = wasm.buffer((rows + off) * nHeads * headDim);
            const or = ref.buffer((rows + off) * nHeads * headDim);
            wasm.storeKV(cw, 1, kw, vw, pos, rows, off);
            ref.storeKV(cr, 1, kr, vr, pos, rows, off);
            wasm.attention(qw, cw, 1, ow, pos, rows, params, off);
            ref.attention(qr, cr, 1, or, pos, rows, params, off);
            assertClose(
              await wasm.read(ow),
              await ref.read(or),
              0,
              `attention ${type}${
                byHead ? " by head" : ""
              } heads ${nHeads}/${nKV}×${headDim} pos ${pos} rows ${rows}`,
            );
            for (const b of [kw, vw, qw, ow]) wasm.free(b);
            pos += rows;
          }
          wasm.free(cw);
        }
      }
    });
  });
}

for (const threads of [2, 3]) {
  Deno.test(`wasm attention with one or two KV heads: a decode's query heads split over ${threads} threads, vs reference`, async () => {
    await withBackends(threads, async (wasm, ref) => {
      // Gemma 3 1B's shape (4 query heads, 1 KV head) and a GQA of 6 over 2; decode rows at a
      // position where the work takes every thread, so each KV head's group is split
      for (const [nHeads, nKV, headDim] of [[4, 1, 64], [6, 2, 32]]) {
        for (const [type, byHead] of KV_LAYOUTS) {
          const kvDim = nKV * headDim;
          const [cw, cr] = kvCaches(wasm, ref, 1, 700, nKV, headDim, type, byHead);
          const params = { nHeads, nKVHeads: nKV, headDim, scale: 1 / Math.sqrt(headDim) };
          const n = 640;
          const k = rand(n * kvDim, 21, 1.5);
          const v = rand(n * kvDim, 31, 1.5);
          const [kw, vw, kr, vr] = [bufOf(wasm, k), bufOf(wasm, v), bufOf(ref, k), bufOf(ref, v)];
          wasm.storeKV(cw, 0, kw, vw, 0, n);
          ref.storeKV(cr, 0, kr, vr, 0, n);
          for (const pos of [600, 639]) {
            const q = rand(nHeads * headDim, 41 + pos, 1.5);
            const [qw, qr] = [bufOf(wasm, q), bufOf(ref, q)];
            const [ow, or] = [wasm.buffer(nHeads * headDim), ref.buffer(nHeads * headDim)];
            wasm.attention(qw, cw, 0, ow, pos, 1, params);
            ref.attention(qr, cr, 0, or, pos, 1, params);
            assertClose(
              await wasm.read(ow),
              await ref.read(or),
              0,
              `attention ${type}${
                byHead ? " by head" : ""
              } heads ${nHeads}/${nKV} decode at ${pos}`,
            );
          }
          wasm.free(cw);
        }
      }
    });
  });
}

Deno.test("wasm attentionMany: a batch's sequences in one job, each as attention alone", async () => {
  await withBackends(2, async (wasm, ref) => {
    const [nHeads, nKV, headDim] = [8, 2, 64];
    const kvDim = nKV * headDim;
    const rowLen = nHeads * headDim;
    for (const window of [0, 5]) {
      for (const type of ["f32", "f16"] as const) {
        const params = { nHeads, nKVHeads: nKV, headDim, scale: 1 / Math.sqrt(headDim), window };
        // sequences at different positions, decode rows and prompt slices mixed, and more of
        // them than one job takes (MAX_SEQS = 256)
        const shapes = Array.from({ length: 300 }, (_, i) => ({
          pos0: (i * 7) % 40,
          rows: i % 9 === 0 ? 6 : 1,
        }));
        const total = shapes.reduce((a, s) => a + s.rows, 0);
        const q = rand(total * rowLen, 90, 1.5);
        const [qw, qr] = [bufOf(wasm, q), bufOf(ref, q)];
        const [ow, or] = [wasm.buffer(total * rowLen), ref.buffer(total * rowLen)];
        const seqsW = [];
        let off = 0;
        for (const [i, sh] of shapes.entries()) {
          const n = sh.pos0 + sh.rows;
          // every other sequence's cache kept head by head: both layouts in one job
          const cw = wasm.kvCache(1, 48, kvDim, type, i % 2 ? headDim : undefined);
          const cr = ref.kvCache(1, 48, kvDim, type);
          const k = rand(n * kvDim, 100 + i, 1.5);
          const v = rand(n * kvDim, 700 + i, 1.5);
          const [kw, vw, kr, vr] = [bufOf(wasm, k), bufOf(wasm, v), bufOf(ref, k), bufOf(ref, v)];
          wasm.storeKV(cw, 0, kw, vw, 0, n);
          ref.storeKV(cr, 0, kr, vr, 0, n);
          ref.attention(qr, cr, 0, or, sh.pos0, sh.rows, params, off);
          seqsW.push({ cache: cw, pos0: sh.pos0, rows: sh.rows, rowOffset: off });
          off += sh.rows;
        }
        wasm.attentionMany!(qw, 0, ow, seqsW, params);
        assertClose(
          await wasm.read(ow),
          await ref.read(or),
          0,
          `attentionMany ${type} window ${window}`,
        );
        for (const s of seqsW) wasm.free(s.cache);
      }
    }
    // A negative row count would shift the later sequences' work items: refused.
    const c = wasm.kvCache(1, 48, kvDim, "f32");
    const q = bufOf(wasm, rand(2 * rowLen, 91, 1));
    const o = wasm.buffer(2 * rowLen);
    const params = { nHeads, nKVHeads: nKV, headDim, scale: 1 / Math.sqrt(headDim) };
    const seqs = [{ cache: c, pos0: 5, rows: -1, rowOffset: 0 }, {
      cache: c,
      pos0: 5,
      rows: 1,
      rowOffset: 1,
    }];
    assertThrows(() => wasm.attentionMany!(q, 0, o, seqs, params), Error, "not a count");
    // A cache kept by heads of another size than the attention's: refused, not misread.
    const byHead = wasm.kvCache(1, 48, kvDim, "f32", headDim / 2);
    assertThrows(
      () => wasm.attention(q, byHead, 0, o, 5, 1, params),
      Error,
      "keeps heads of 32 elements, not 64",
    );
    assertThrows(() => wasm.kvCache(1, 48, kvDim, "f32", 48), Error, "does not divide");
  });
});

for (const biasedQ8 of [false, true]) {
  const form = biasedQ8 ? "the biased activation" : "P/N planes";
  Deno.test(`wasm matmul: Q8_0 over ${form}, extreme quants, decode and prompt tiles`, async () => {
    const probe = await createWasmBackend({ threads: 1 });
    const can = probe.biasedQ8;
    probe.dispose();
    if (biasedQ8 && !can) {
      // an engine whose relaxed dot reads the byte as signed or saturates refuses the kernel
      await assertRejects(() => createWasmBackend({ threads: 1, biasedQ8 }), Error, "biased");
      return;
    }
    const wasm = await createWasmBackend({ threads: 2, biasedQ8 });
    const ref = createReferenceBackend();
    try {
      const n = 128;
      const m = 66; // 16 full 4-row groups and a partial one (rows 64, 65); 9 rows take 2 threads
      const rb = 34 * (n / 32);
      const data = weightBytes(GGMLType.Q8_0, n, m, 77);
      const at = (row: number, block: number, quant: number) => row * rb + block * 34 + 2 + quant;
      data[at(0, 0, 0)] = 0x80; // -128 (never made by ggml's quantizer)
      data[at(5, 0, 17)] = 0x80; // group 1, lane 1
      // a block of row 2 (lane 2) at both ends of the range, one of row 7 (lane 3) all -128, and
      // the partial group's rows likewise
      for (let i = 0; i < 32; i++) {
        data[at(2, 1, i)] = i % 2 ? 0x7f : 0x81;
        data[at(7, 3, i)] = 0x80;
        data[at(64, 2, i)] = 0x80;
        data[at(65, 3, i)] = i % 2 ? 0x80 : 0x7f;
      }
      const spec = { name: "q8_extremes", type: GGMLType.Q8_0, shape: [n, m], data };
      const ww = wasm.upload(spec);
      const wr = ref.upload(spec);
      // 8 and 16: the 8-row tiles alone; 12 and 13: one and a 4-row tile; 3 and 11: a 4-row
      // tile padded; 15: two 8-row tiles, the second padded; 17: two and a row
      for (const rows of [1, 3, 4, 8, 9, 11, 12, 13, 15, 16, 17]) {
        // activations whose quants reach ±127 in every block (one large value per block)
        const x = rand(rows * n, 78 + rows, 2);
        for (let i = 0; i < x.length; i += 32) x[i + (i % 7)] = i % 64 ? 50 : -50;
        const ow = wasm.buffer(rows * m);
        const or = ref.buffer(rows * m);
        wasm.matmul(ww, bufOf(wasm, x), ow, rows);
        ref.matmul(wr, bufOf(ref, x), or, rows);
        assertClose(await wasm.read(ow), await ref.read(or), 0, `Q8_0 ${form} rows=${rows}`);
      }
    } finally {
      wasm.dispose();
      ref.dispose();
    }
  });
}

Deno.test("wasm Q8_0 weights of 1-3 rows (no 4-row group: stored flipped row by row under the biased kernel): matmul, embed and float copy", async () => {
  await withBackends(2, async (wasm, ref) => {
    const n = 96;
    for (const m of [1, 2, 3]) {
      const data = weightBytes(GGMLType.Q8_0, n, m, 30 + m);
      const spec = { name: `small_${m}`, type: GGMLType.Q8_0, shape: [n, m], data };
      const ww = wasm.upload(spec);
      const wr = ref.upload(spec);
      for (const rows of [1, 9]) {
        const x = rand(rows * n, 70 + rows, 2);
        const [ow, or] = [wasm.buffer(rows * m), ref.buffer(rows * m)];
        wasm.matmul(ww, bufOf(wasm, x), ow, rows);
        ref.matmul(wr, bufOf(ref, x), or, rows);
        assertClose(await wasm.read(ow), await ref.read(or), 0, `Q8_0 m=${m} rows=${rows}`);
      }
      const ids = Int32Array.from({ length: m }, (_, i) => m - 1 - i);
      const [ew, er] = [wasm.buffer(m * n), ref.buffer(m * n)];
      wasm.embed(ww, ids, ew);
      ref.embed(wr, ids, er);
      assertClose(await wasm.read(ew), await ref.read(er), 0, `Q8_0 embed m=${m}`);
      if (m === 1) {
        // a one-row weight's float copy (rmsNorm's weight), made when it loads
        const x = rand(2 * n, 5, 2);
        const [ow, or] = [wasm.buffer(2 * n), ref.buffer(2 * n)];
        wasm.rmsNorm(bufOf(wasm, x), ww, ow, 2, 1e-5);
        ref.rmsNorm(bufOf(ref, x), wr, or, 2, 1e-5);
        assertClose(await wasm.read(ow), await ref.read(or), 0, "Q8_0 one-row rmsNorm weight");
      }
    }
  });
});

Deno.test("wasm relaxed-dot probe: only an unsigned, unsaturated reading takes the biased kernel", () => {
  const engine = (read: (b: number) => number, saturate: boolean) =>
    ({
      relaxedDot: (a: number, b: number) => {
        const av = a << 24 >> 24;
        const bv = read(b & 0xff);
        const pair = 2 * av * bv;
        return 2 * (saturate ? Math.max(-32768, Math.min(32767, pair)) : pair);
      },
    }) as unknown as Kernels;
  assertEquals(dotReadsUnsigned(engine((b) => b, false)), true, "x86 VNNI (vpdpbusd)");
  assertEquals(dotReadsUnsigned(engine((b) => b, true)), false, "x86 without VNNI (pmaddubsw)");
  assertEquals(dotReadsUnsigned(engine((b) => b << 24 >> 24, false)), false, "Arm (sdot)");
});

Deno.test("wasm swiglu over a wide range (ggml's SIMD exp, bit for bit) vs reference", async () => {
  await withBackends(1, async (wasm, ref) => {
    const n = 4099;
    const g = rand(n, 5, 120);
    g.set([0, -0, 88, -88, 89, -89, 1e-8, -1e-8, 30, -30], 0);
    const u = rand(n, 6, 3);
    const [gw, uw, ow] = [bufOf(wasm, g), bufOf(wasm, u), wasm.buffer(n)];
    const [gr, ur, or] = [bufOf(ref, g), bufOf(ref, u), ref.buffer(n)];
    wasm.swiglu(gw, uw, ow, n);
    ref.swiglu(gr, ur, or, n);
    assertClose(await wasm.read(ow), await ref.read(or), 0, "swiglu wide");
  });
});
