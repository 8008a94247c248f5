import { assert, assertEquals } from "../../support/assert.ts";
import { createReferenceBackend } from "../../../kernels/reference/mod.ts";
import type { Backend, Buf, KVType } from "../../../kernels/backend.ts";
import {
  convertActivations,
  dequantizeRow,
  GGMLType,
  quantizeRow,
  roundF16,
  rowBytes,
  typeName,
  vecDot,
  vecDotType,
} from "../../../kernels/quant/mod.ts";
import { randomFloats } from "../quant/gguf_helper.ts";

function upload(
  be: Backend,
  name: string,
  type: GGMLType,
  shape: number[],
  seed: number,
  scale = 1,
) {
  const n = shape.reduce((a, b) => a * b, 1);
  const x = randomFloats(n, seed, scale);
  const data = quantizeRow(type, x, n);
  return { w: be.upload({ name, type, shape, data }), x, data };
}

function bufOf(be: Backend, x: Float32Array): Buf {
  const b = be.buffer(x.length);
  be.write(b, x);
  return b;
}

function close(got: ArrayLike<number>, want: ArrayLike<number>, tol: number, what: string) {
  assertEquals(got.length, want.length, `${what}: length`);
  for (let i = 0; i < want.length; i++) {
    const err = Math.abs(got[i] - want[i]);
    assert(err <= tol * Math.max(1, Math.abs(want[i])), `${what}[${i}]: ${got[i]} vs ${want[i]}`);
  }
}

Deno.test("buffers: write at an offset, read a copy of a range", async () => {
  const be = createReferenceBackend();
  const b = be.buffer(6);
  be.write(b, new Float32Array([1, 2, 3]), 2);
  const all = await be.read(b);
  assertEquals([...all], [0, 0, 1, 2, 3, 0]);
  all[2] = 99;
  assertEquals([...(await be.read(b, 2, 2))], [1, 2]);
  let threw = false;
  try {
    be.write(b, new Float32Array(5), 2);
  } catch {
    threw = true;
  }
  assert(threw, "writing past the end throws");
});

Deno.test("upload checks the byte length against type and shape", () => {
  const be = createReferenceBackend();
  let message = "";
  try {
    be.upload({ name: "w", type: GGMLType.Q8_0, shape: [64, 2], data: new Uint8Array(34 * 3) });
  } catch (e) {
    message = (e as Error).message;
  }
  // The whole reason: which weight, its type and shape, the bytes it needs and got.
  assertEquals(message, "weight w: Q8_0 [64, 2] needs 136 bytes, got 102");
});

for (const type of [GGMLType.F32, GGMLType.F16, GGMLType.Q8_0, GGMLType.Q4_K, GGMLType.Q6_K]) {
  Deno.test(`embed ${typeName(type)}: rows are the dequantized table rows (ggml_get_rows)`, async () => {
    const be = createReferenceBackend();
    const { w, data } = upload(be, "tok", type, [256, 7], 1);
    const ids = Int32Array.of(3, 0, 6, 3);
    const out = be.buffer(4 * 256);
    be.embed(w, ids, out);
    const got = await be.read(out);
    const want = new Float32Array(4 * 256);
    ids.forEach((id, t) => dequantizeRow(type, data, id * rowBytes(type, 256), want, t * 256, 256));
    assertEquals([...got], [...want]);
  });
}

Deno.test("rmsNorm: x / sqrt(mean(x²) + eps) ⊙ w on odd sizes", async () => {
  const be = createReferenceBackend();
  const n = 37;
  const rows = 3;
  const { w, x: g } = upload(be, "norm", GGMLType.F32, [n], 2);
  const x = randomFloats(n * rows, 3, 4);
  const out = be.buffer(n * rows);
  be.rmsNorm(bufOf(be, x), w, out, rows, 1e-5);
  const want = new Float64Array(n * rows);
  for (let t = 0; t < rows; t++) {
    let ss = 0;
    for (let i = 0; i < n; i++) ss += x[t * n + i] ** 2;
    const s = 1 / Math.sqrt(ss / n + 1e-5);
    for (let i = 0; i < n; i++) want[t * n + i] = x[t * n + i] * s * g[i];
  }
  close(await be.read(out), want, 1e-6, "rmsNorm");
});

const MATMUL_TYPES: [GGMLType, number][] = [
  [GGMLType.F32, 37],
  [GGMLType.F16, 37],
  [GGMLType.BF16, 37],
  [GGMLType.Q4_0, 96],
  [GGMLType.Q4_1, 64],
  [GGMLType.Q5_0, 96],
  [GGMLType.Q5_1, 32],
  [GGMLType.Q8_0, 160],
  [GGMLType.Q2_K, 256],
  [GGMLType.Q3_K, 512],
  [GGMLType.Q4_K, 256],
  [GGMLType.Q5_K, 512],
  [GGMLType.Q6_K, 256],
];

for (const [type, k] of MATMUL_TYPES) {
  Deno.test(`matmul ${typeName(type)}: each output is ggml's vec_dot of the converted row`, async () => {
    const be = createReferenceBackend();
    const nOut = 5;
    const rows = 3;
    const { w, data } = upload(be, "w", type, [k, nOut], 4, 0.05);
    const x = randomFloats(rows * k, 5);
    const out = be.buffer(rows * nOut);
    be.matmul(w, bufOf(be, x), out, rows);
    const got = await be.read(out);
    const stride = rowBytes(type, k);
    const wf = new Float32Array(k * nOut);
    dequantizeRow(type, data, 0, wf, 0, k * nOut);
    for (let t = 0; t < rows; t++) {
      const xq = convertActivations(vecDotType(type), x, k, t * k);
      for (let r = 0; r < nOut; r++) {
        assertEquals(got[t * nOut + r], vecDot(type, data, r * stride, xq, k), `[${t},${r}]`);
        // And close to exact math on the (dequantized) weights: activation rounding only.
        let exact = 0;
        let mag = 0;
        for (let c = 0; c < k; c++) {
          exact += wf[r * k + c] * x[t * k + c];
          mag += Math.abs(wf[r * k + c] * x[t * k + c]);
        }
        const tol = type === GGMLType.F32 ? 1e-6 : type === GGMLType.BF16 ? 1e-2 : 2e-2;
        assert(Math.abs(got[t * nOut + r] - exact) <= tol * mag, `${typeName(type)} ${exact}`);
      }
    }
  });
}

Deno.test("matmul: out may alias x", async () => {
  const be = createReferenceBackend();
  const { w } = upload(be, "w", GGMLType.Q8_0, [64, 32], 6);
  const x = randomFloats(2 * 64, 7);
  const a = be.buffer(2 * 64);
  be.write(a, x);
  const b = be.buffer(2 * 32);
  be.matmul(w, bufOf(be, x), b, 2);
  be.matmul(w, a, a, 2);
  assertEquals([...(await be.read(a, 0, 64))], [...(await be.read(b))]);
});

Deno.test("addBias, add, swiglu match their formulas", async () => {
  const be = createReferenceBackend();
  const n = 13;
  const { w: bias, x: bv } = upload(be, "b", GGMLType.F32, [n], 8);
  const x = randomFloats(2 * n, 9, 3);
  const xb = bufOf(be, x);
  be.addBias(xb, bias, 2);
  close(await be.read(xb), x.map((v, i) => v + bv[i % n]), 1e-7, "addBias");
  const y = randomFloats(2 * n, 10, 3);
  const a = bufOf(be, x);
  be.add(a, bufOf(be, y), 2 * n);
  close(await be.read(a), x.map((v, i) => v + y[i]), 1e-7, "add");
  const out = be.buffer(2 * n);
  be.swiglu(bufOf(be, x), bufOf(be, y), out, 2 * n);
  close(await be.read(out), x.map((g, i) => (g / (1 + Math.exp(-g))) * y[i]), 1e-6, "swiglu");
});

function naiveRope(
  x: Float32Array,
  pos: number[],
  nHeads: number,
  headDim: number,
  ropeDim: number,
  base: number,
  freqScale: number,
  neox: boolean,
): Float64Array {
  const y = Float64Array.from(x);
  const half = ropeDim / 2;
  pos.forEach((p, t) => {
    for (let h = 0; h < nHeads; h++) {
      const o = (t * nHeads + h) * headDim;
      for (let i = 0; i < half; i++) {
        const theta = p * freqScale * Math.pow(base, (-2 * i) / ropeDim);
        const [a, b] = neox ? [o + i, o + i + half] : [o + 2 * i, o + 2 * i + 1];
        y[a] = x[a] * Math.cos(theta) - x[b] * Math.sin(theta);
        y[b] = x[a] * Math.sin(theta) + x[b] * Math.cos(theta);
      }
    }
  });
  return y;
}

for (const neox of [false, true]) {
  Deno.test(`rope (${neox ? "NEOX" : "normal"}): rotates pairs, partial ropeDim passes the rest`, async () => {
    const be = createReferenceBackend();
    const nHeads = 3;
    const headDim = 12;
    const pos = [0, 1, 7, 19];
    for (const [ropeDim, freqScale] of [[12, 1], [8, 0.5]]) {
      const x = randomFloats(pos.length * nHeads * headDim, 11 + ropeDim);
      const b = bufOf(be, x);
      be.rope(b, Int32Array.from(pos), {
        nHeads,
        headDim,
        ropeDim,
        freqBase: 10000,
        freqScale,
        neox,
      });
      const got = await be.read(b);
      const want = naiveRope(x, pos, nHeads, headDim, ropeDim, 10000, freqScale, neox);
      close(got, want, 2e-5, `rope dim ${ropeDim}`);
      for (let t = 0; t < pos.length * nHeads; t++) {
        for (let i = ropeDim; i < headDim; i++) {
          assertEquals(got[t * headDim + i], x[t * headDim + i], "pass-through");
        }
      }
      // Position 0 is the identity.
      for (let i = 0; i < nHeads * headDim; i++) assertEquals(got[i], x[i]);
    }
  });
}

function naiveAttention(
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  pos0: number,
  rows: number,
  nHeads: number,
  nKV: number,
  hd: number,
  scale: number,
): Float64Array {
  const out = new Float64Array(rows * nHeads * hd);
  const kvDim = nKV * hd;
  for (let t = 0; t < rows; t++) {
    for (let h = 0; h < nHeads; h++) {
      const g = Math.floor(h / (nHeads / nKV));
      const s: number[] = [];
      for (let j = 0; j <= pos0 + t; j++) {
        let d = 0;
        for (let i = 0; i < hd; i++) d += q[(t * nHeads + h) * hd + i] * k[j * kvDim + g * hd + i];
        s.push(d * scale);
      }
      const m = Math.max(...s);
      const e = s.map((z) => Math.exp(z - m));
      const sum = e.reduce((a, b) => a + b, 0);
      for (let i = 0; i < hd; i++) {
        let acc = 0;
        e.forEach((p, j) => (acc += (p / sum) * v[j * kvDim + g * hd + i]));
        out[(t * nHeads + h) * hd + i] = acc;
      }
    }
  }
  return out;
}

for (const kvType of ["f32", "f16"] as KVType[]) {
  Deno.test(`attention (${kvType} cache, GQA 6/2): causal softmax over stored keys`, async () => {
    const be = createReferenceBackend();
    const nHeads = 6;
    const nKV = 2;
    const hd = 8;
    const kvDim = nKV * hd;
    const total = 7;
    const k = randomFloats(total * kvDim, 20);
    const v = randomFloats(total * kvDim, 21);
    const q = randomFloats(total * nHeads * hd, 22);
    const cache = be.kvCache(2, 16, kvDim, kvType);
    // Prefill 4 positions, then 3 more in one batch stored from a row offset of a larger buffer.
    const kb = bufOf(be, k);
    const vb = bufOf(be, v);
    be.storeKV(cache, 1, kb, vb, 0, 4);
    be.storeKV(cache, 1, kb, vb, 4, 3, 4);
    const params = { nHeads, nKVHeads: nKV, headDim: hd, scale: 1 / Math.sqrt(hd) };
    const out = be.buffer(total * nHeads * hd);
    be.attention(bufOf(be, q), cache, 1, out, 0, 4, params);
    be.attention(bufOf(be, q), cache, 1, out, 4, 3, params, 4);
    const got = await be.read(out);
    const r = (a: Float32Array) => (kvType === "f16" ? a.map(roundF16) : a);
    const want = naiveAttention(q, r(k), r(v), 0, total, nHeads, nKV, hd, params.scale);
    // f16: q and the softmax weights are rounded to f16 too (≈ 2^-11 relative each).
    close(got, want, kvType === "f16" ? 3e-3 : 1e-6, `attention ${kvType}`);
  });
}

Deno.test("attention row 0 attends only to itself; layers are independent", async () => {
  const be = createReferenceBackend();
  const hd = 4;
  const cache = be.kvCache(2, 4, hd, "f32");
  const k = Float32Array.of(1, 2, 3, 4);
  const v = Float32Array.of(5, 6, 7, 8);
  be.storeKV(cache, 0, bufOf(be, k), bufOf(be, v), 0, 1);
  const out = be.buffer(hd);
  be.attention(bufOf(be, Float32Array.of(1, 1, 1, 1)), cache, 0, out, 0, 1, {
    nHeads: 1,
    nKVHeads: 1,
    headDim: hd,
    scale: 0.5,
  });
  assertEquals([...(await be.read(out))], [5, 6, 7, 8]);
  be.attention(bufOf(be, Float32Array.of(1, 1, 1, 1)), cache, 1, out, 0, 1, {
    nHeads: 1,
    nKVHeads: 1,
    headDim: hd,
    scale: 0.5,
  });
  assertEquals([...(await be.read(out))], [0, 0, 0, 0]);
});
