import { assert, assertEquals } from "../../support/assert.ts";
import {
  convertActivations,
  dequantizeRow,
  f16ToF32,
  GGMLType,
  quantizeRow,
  rowBytes,
  typeName,
  vecDot,
  vecDotType,
  WEIGHT_TYPES,
} from "../../../kernels/quant/mod.ts";
import { randomFloats } from "./gguf_helper.ts";

Deno.test("vecDotType is ggml's pairing", () => {
  const expect: Record<number, GGMLType> = {
    [GGMLType.F32]: GGMLType.F32,
    [GGMLType.F16]: GGMLType.F16,
    [GGMLType.BF16]: GGMLType.BF16,
    [GGMLType.Q4_0]: GGMLType.Q8_0,
    [GGMLType.Q4_1]: GGMLType.Q8_1,
    [GGMLType.Q5_0]: GGMLType.Q8_0,
    [GGMLType.Q5_1]: GGMLType.Q8_1,
    [GGMLType.Q8_0]: GGMLType.Q8_0,
  };
  for (const t of WEIGHT_TYPES) {
    assertEquals(vecDotType(t), expect[t] ?? GGMLType.Q8_K, typeName(t));
  }
});

/**
 * Σ w·x in double over the dequantized weight row and dequantized converted activations. For
 * Q4_1/Q5_1 ggml uses the activation block's stored s (= fp16(d·Σq)) for the m term, so the
 * reference does too.
 */
function reference(
  t: GGMLType,
  w: Uint8Array,
  wo: number,
  xq: Uint8Array | Float32Array,
  n: number,
) {
  const wf = new Float32Array(n);
  dequantizeRow(t, w, wo, wf, 0, n);
  const vt = vecDotType(t);
  const xf = new Float32Array(n);
  if (xq instanceof Float32Array) xf.set(xq.subarray(0, n));
  else dequantizeRow(vt, xq, 0, xf, 0, n);
  let sum = 0;
  let mag = 0;
  for (let i = 0; i < n; i++) {
    sum += wf[i] * xf[i];
    mag += Math.abs(wf[i] * xf[i]);
  }
  if (vt === GGMLType.Q8_1 && xq instanceof Uint8Array) {
    const wb = t === GGMLType.Q4_1 ? 20 : 24;
    for (let b = 0; b < n / 32; b++) {
      const m = f16ToF32(w[wo + b * wb + 2] | (w[wo + b * wb + 3] << 8));
      const yo = b * 36;
      const d = f16ToF32(xq[yo] | (xq[yo + 1] << 8));
      const s = f16ToF32(xq[yo + 2] | (xq[yo + 3] << 8));
      let qsum = 0;
      for (let i = 0; i < 32; i++) qsum += (xq[yo + 4 + i] << 24) >> 24;
      sum += m * (s - d * qsum);
      mag += Math.abs(m * s);
    }
  }
  return { sum, mag };
}

for (const t of WEIGHT_TYPES) {
  Deno.test(`vecDot ${typeName(t)}: equals the double dot of the dequantized operands`, () => {
    const block = t === GGMLType.F32 || t === GGMLType.F16 || t === GGMLType.BF16
      ? 1
      : [GGMLType.Q2_K, GGMLType.Q3_K, GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K].includes(t)
      ? 256
      : 32;
    for (
      const [nBlocks, rows, seed] of [[1, 3, 1], [3, 5, 2], [7, 1, 3], [block === 1 ? 97 : 2, 4, 4]]
    ) {
      const n = nBlocks * (block === 1 ? 1 : block) * (block === 1 ? 3 : 1);
      const w = quantizeRow(t, randomFloats(n * rows, seed, 0.05), n * rows);
      const stride = rowBytes(t, n);
      const x = randomFloats(n, seed + 100, 1.5);
      const xq = convertActivations(vecDotType(t), x, n);
      for (let r = 0; r < rows; r++) {
        const got = vecDot(t, w, r * stride, xq, n);
        assertEquals(got, Math.fround(got), "result is a float32");
        const { sum, mag } = reference(t, w, r * stride, xq, n);
        assert(
          Math.abs(got - sum) <= 1e-5 * mag + 1e-30,
          `${typeName(t)} n=${n} row ${r}: ${got} vs ${sum} (Σ|·| ${mag})`,
        );
      }
    }
  });
}

Deno.test("vecDot rejects mismatched activation kinds and unknown types", () => {
  const w = quantizeRow(GGMLType.Q8_0, new Float32Array(32), 32);
  let threw = false;
  try {
    vecDot(GGMLType.Q8_0, w, 0, new Float32Array(32), 32);
  } catch {
    threw = true;
  }
  assert(threw);
});
