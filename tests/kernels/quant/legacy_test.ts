import { assert, assertEquals } from "../../support/assert.ts";
import {
  dequantizeRow,
  GGMLType,
  quantizeRow,
  quantizeRowF16,
  quantizeRowQ4_0,
  quantizeRowQ8_0,
  quantizeRowQ8_1,
  typeName,
} from "../../../kernels/quant/mod.ts";
import { f32Values, randomFloats, readTensors } from "./gguf_helper.ts";

const src = await readTensors("tiny-f32.gguf");

for (
  const [file, type, quant] of [
    ["tiny-q8_0.gguf", GGMLType.Q8_0, quantizeRowQ8_0],
    ["tiny-q4_0.gguf", GGMLType.Q4_0, quantizeRowQ4_0],
    ["tiny-f16.gguf", GGMLType.F16, quantizeRowF16],
  ] as const
) {
  Deno.test(`${file}: re-quantizing tiny-f32 reproduces every ${typeName(type)} tensor byte for byte`, async () => {
    let checked = 0;
    for (const [name, t] of await readTensors(file)) {
      const x = f32Values(src.get(name)!);
      const expect = t.type === GGMLType.F16 ? quantizeRowF16(x, x.length) : quant(x, x.length);
      if (t.type === GGMLType.F32) continue;
      assertEquals(expect.length, t.data.length, name);
      for (let i = 0; i < expect.length; i++) {
        if (expect[i] !== t.data[i]) {
          throw new Error(`${name}: byte ${i} ${expect[i]} ≠ ${t.data[i]}`);
        }
      }
      if (t.type === type) checked++;
    }
    assert(checked >= 10, `${checked}`);
  });
}

Deno.test("legacy formats dequantize hand-built blocks to known values", () => {
  const y = new Float32Array(32);
  // Q4_0: d = 0.5, byte j = (lo 9, hi 2) → element j = (9−8)·0.5, element j+16 = (2−8)·0.5.
  const q40 = new Uint8Array(18);
  q40.set([0x00, 0x38]);
  q40.fill(0x29, 2);
  dequantizeRow(GGMLType.Q4_0, q40, 0, y, 0, 32);
  assertEquals(y[0], 0.5);
  assertEquals(y[16], -3);
  // Q4_1: d = 2, m = −1, nibbles (3, 15) → 5, 29.
  const q41 = new Uint8Array(20);
  q41.set([0x00, 0x40, 0x00, 0xbc]);
  q41.fill(0xf3, 4);
  dequantizeRow(GGMLType.Q4_1, q41, 0, y, 0, 32);
  assertEquals([y[0], y[31]], [5, 29]);
  // Q5_0: d = 1, qh bit 0 and bit 16 set, nibbles (1, 2) → el0 = 17−16, el16 = 18−16, el1 = 1−16.
  const q50 = new Uint8Array(22);
  q50.set([0x00, 0x3c, 0x01, 0x00, 0x01, 0x00]);
  q50.fill(0x21, 6);
  dequantizeRow(GGMLType.Q5_0, q50, 0, y, 0, 32);
  assertEquals([y[0], y[16], y[1], y[17]], [1, 2, -15, -14]);
  // Q5_1: d = 1, m = 0.5, qh bit 31 → el31 = (2 | 16)·1 + 0.5.
  const q51 = new Uint8Array(24);
  q51.set([0x00, 0x3c, 0x00, 0x38, 0, 0, 0, 0x80]);
  q51.fill(0x21, 8);
  dequantizeRow(GGMLType.Q5_1, q51, 0, y, 0, 32);
  assertEquals([y[0], y[15], y[31]], [1.5, 1.5, 18.5]);
  // Q8_0: d = 0.25, q = −128..−97 → q·0.25.
  const q80 = new Uint8Array(34);
  q80.set([0x00, 0x34]);
  for (let j = 0; j < 32; j++) q80[2 + j] = 128 + j;
  dequantizeRow(GGMLType.Q8_0, q80, 0, y, 0, 32);
  assertEquals([y[0], y[31]], [-32, -24.25]);
});

Deno.test("Q8_0 / Q8_1 round trips stay within half a step; Q8_1 carries s = d·Σq", () => {
  const x = randomFloats(32 * 37, 5, 2);
  for (const t of [GGMLType.Q8_0, GGMLType.Q8_1]) {
    const q = quantizeRow(t, x, x.length);
    const y = new Float32Array(x.length);
    dequantizeRow(t, q, 0, y, 0, x.length);
    for (let b = 0; b < 37; b++) {
      let amax = 0;
      for (let i = 0; i < 32; i++) amax = Math.max(amax, Math.abs(x[32 * b + i]));
      // d is rounded to f16 (rel 2^-11) after the values were scaled by the unrounded d.
      const tol = (amax / 127) * 0.5 + amax * 2 ** -10;
      for (let i = 0; i < 32; i++) {
        const k = 32 * b + i;
        assert(Math.abs(x[k] - y[k]) <= tol, `${typeName(t)} ${k}: ${x[k]} vs ${y[k]}`);
      }
    }
  }
  const q1 = quantizeRowQ8_1(x, 32);
  const dv = new DataView(q1.buffer);
  let sum = 0;
  for (let i = 0; i < 32; i++) sum += dv.getInt8(4 + i);
  const d = y16(dv.getUint16(0, true));
  const s = y16(dv.getUint16(2, true));
  assert(Math.abs(s - sum * d) <= Math.abs(sum * d) * 2 ** -10, `${s} vs ${sum * d}`);
});

function y16(h: number): number {
  const y = new Float32Array(1);
  dequantizeRow(GGMLType.F16, new Uint8Array([h & 0xff, h >> 8]), 0, y, 0, 1);
  return y[0];
}

Deno.test("Q4_0/Q4_1/Q5_0/Q5_1 round trips stay within their step size", () => {
  const x = randomFloats(32 * 41, 9, 0.1);
  const levels: [GGMLType, number][] = [
    [GGMLType.Q4_0, 8],
    [GGMLType.Q4_1, 15],
    [GGMLType.Q5_0, 16],
    [GGMLType.Q5_1, 31],
  ];
  for (const [t, steps] of levels) {
    const q = quantizeRow(t, x, x.length);
    const y = new Float32Array(x.length);
    dequantizeRow(t, q, 0, y, 0, x.length);
    for (let b = 0; b < 41; b++) {
      let amax = 0;
      let min = Infinity;
      let max = -Infinity;
      for (let i = 0; i < 32; i++) {
        const v = x[32 * b + i];
        amax = Math.max(amax, Math.abs(v));
        min = Math.min(min, v);
        max = Math.max(max, v);
      }
      const step = t === GGMLType.Q4_1 || t === GGMLType.Q5_1 ? (max - min) / steps : amax / steps;
      for (let i = 0; i < 32; i++) {
        const k = 32 * b + i;
        // Half a step from rounding, plus a full step where the symmetric formats clamp the
        // opposite end (q = 15 / 31 cannot reach +amax), plus f16 rounding of d and m.
        assert(Math.abs(x[k] - y[k]) <= step * 1.01 + amax * 2 ** -9, `${typeName(t)} ${k}`);
      }
    }
  }
});
