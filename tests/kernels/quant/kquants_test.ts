import { assert, assertEquals } from "../../support/assert.ts";
import {
  dequantizeRow,
  GGMLType,
  quantizeRow,
  quantizeRowQ8_K,
  rowBytes,
  typeName,
} from "../../../kernels/quant/mod.ts";
import { f32Values, randomFloats, readTensors } from "./gguf_helper.ts";

const src = await readTensors("kq-f32.gguf");

function firstDiff(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) if (a[i] !== b[i]) return i;
  return -1;
}

for (const file of ["kq-q4_k_m.gguf", "kq-q5_k_m.gguf", "kq-q6_k.gguf"]) {
  const q = await readTensors(file);
  Deno.test(`${file}: ref quantizers re-create llama-quantize's K-quant bytes exactly`, () => {
    let checked = 0;
    for (const [name, t] of q) {
      if (t.type === GGMLType.F32) continue;
      const x = f32Values(src.get(name)!);
      const mine = quantizeRow(t.type, x, x.length);
      const at = firstDiff(mine, t.data);
      assertEquals(at, -1, `${name} (${typeName(t.type)}) differs at byte ${at}`);
      checked++;
    }
    assert(checked > 10);
  });

  Deno.test(`${file}: dequantized K-quant tensors stay close to the f32 source`, () => {
    // Relative RMS error bounds of the formats on Gaussian-like weights (bits: 4.5, 5.5, 6.6).
    const bound: Record<number, number> = {
      [GGMLType.Q4_K]: 0.12,
      [GGMLType.Q5_K]: 0.06,
      [GGMLType.Q6_K]: 0.03,
    };
    for (const [name, t] of q) {
      if (t.type === GGMLType.F32) continue;
      const x = f32Values(src.get(name)!);
      const y = new Float32Array(x.length);
      dequantizeRow(t.type, t.data, 0, y, 0, x.length);
      let err = 0;
      let ref = 0;
      for (let i = 0; i < x.length; i++) {
        err += (x[i] - y[i]) ** 2;
        ref += x[i] ** 2;
      }
      const rel = Math.sqrt(err / ref);
      assert(rel < bound[t.type], `${name} ${typeName(t.type)} rel rms ${rel}`);
    }
  });
}

Deno.test("Q2_K/Q3_K/Q4_K/Q5_K/Q6_K round trips shrink error with more bits", () => {
  const x = randomFloats(256 * 8, 7, 0.02);
  const rels: number[] = [];
  for (const t of [GGMLType.Q2_K, GGMLType.Q3_K, GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K]) {
    const q = quantizeRow(t, x, x.length);
    assertEquals(q.length, rowBytes(t, x.length));
    const y = new Float32Array(x.length);
    dequantizeRow(t, q, 0, y, 0, x.length);
    let err = 0;
    let ref = 0;
    for (let i = 0; i < x.length; i++) {
      err += (x[i] - y[i]) ** 2;
      ref += x[i] ** 2;
    }
    rels.push(Math.sqrt(err / ref));
  }
  // Typical relative RMS errors: Q2_K ≈ 0.3, Q3_K ≈ 0.17, Q4_K ≈ 0.09, Q5_K ≈ 0.045, Q6_K ≈ 0.02.
  const max = [0.45, 0.25, 0.12, 0.06, 0.03];
  rels.forEach((r, i) => assert(r < max[i], `type #${i} rel rms ${r}`));
  for (let i = 1; i < rels.length; i++) assert(rels[i] < rels[i - 1], `${rels}`);
});

Deno.test("Q2_K/Q3_K dequantize hand-built blocks to known values", () => {
  // Q2_K: d = 1, dmin = 0.5, scale nibble 2 / min nibble 1 for every sub-block, all quants = 3.
  const b2 = new Uint8Array(84);
  b2.fill(0x12, 0, 16);
  b2.fill(0xff, 16, 80);
  b2.set([0x00, 0x3c, 0x00, 0x38], 80); // f16 1.0, 0.5
  const y2 = new Float32Array(256);
  dequantizeRow(GGMLType.Q2_K, b2, 0, y2, 0, 256);
  assert(y2.every((v) => v === 2 * 3 - 0.5), `${y2.slice(0, 4)}`);
  // Element 17 with quant 1 (byte 1 of qs, shift 0) → 2·1 − 0.5.
  b2[16 + 17] = 0xfd;
  dequantizeRow(GGMLType.Q2_K, b2, 0, y2, 0, 256);
  assertEquals(y2[17], 1.5);

  // Q3_K: d = 0.25, every 6-bit scale = 33 (→ 1), qs = 0, hmask bits set → q = 0 … and clear → −4.
  const b3 = new Uint8Array(110);
  b3.fill(0xff, 0, 32); // hmask: high bit set → no −4
  // scales: low nibbles 1 in bytes 0..7 (j<8) and high nibbles 1 (j≥8); high 2 bits = 2 (32).
  b3.fill(0x11, 96, 104);
  b3.fill(0xaa, 104, 108);
  b3.set([0x00, 0x34], 108); // f16 0.25
  const y3 = new Float32Array(256);
  dequantizeRow(GGMLType.Q3_K, b3, 0, y3, 0, 256);
  assert(y3.every((v) => v === 0), `${y3.slice(0, 4)}`);
  b3[0] = 0xfe; // element 0 loses its high bit → q = −4
  b3[32] = 0x03; // element 0 low bits = 3 → 3 − 4 = −1
  dequantizeRow(GGMLType.Q3_K, b3, 0, y3, 0, 256);
  assertEquals(y3[0], -0.25);
});

Deno.test("Q8_K: scale sign follows the largest-magnitude value; bsums; round trip", () => {
  const x = randomFloats(512, 11, 3);
  x[5] = -20; // largest |x| is negative: iscale = −127/−20 > 0, so it maps to q = −127, d > 0
  const q = quantizeRowQ8_K(x, 512);
  const dv = new DataView(q.buffer);
  const d = dv.getFloat32(0, true);
  assert(d > 0, `d ${d}`);
  assertEquals(dv.getInt8(4 + 5), -127);
  for (let j = 0; j < 16; j++) {
    let s = 0;
    for (let i = 0; i < 16; i++) s += dv.getInt8(4 + 16 * j + i);
    assertEquals(dv.getInt16(260 + 2 * j, true), s);
  }
  x[300] = 25; // positive max: iscale = −127/25 < 0, so d < 0 and the max maps to q = −127
  const q2 = quantizeRowQ8_K(x, 512);
  const dv2 = new DataView(q2.buffer);
  assert(dv2.getFloat32(292, true) < 0);
  assertEquals(dv2.getInt8(292 + 4 + 300 - 256), -127);
  const y = new Float32Array(512);
  dequantizeRow(GGMLType.Q8_K, q2, 0, y, 0, 512);
  for (let b = 0; b < 2; b++) {
    let amax = 0;
    for (let i = 0; i < 256; i++) amax = Math.max(amax, Math.abs(x[256 * b + i]));
    for (let i = 0; i < 256; i++) {
      const k = 256 * b + i;
      assert(Math.abs(x[k] - y[k]) <= (amax / 127) * 0.5 * (1 + 1e-5), `${k}`);
    }
  }
  // An all-zero block quantizes to zeros.
  const z = quantizeRowQ8_K(new Float32Array(256), 256);
  assert(z.every((v) => v === 0));
});
