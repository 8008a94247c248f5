/** Shared helpers of the WASM backend tests: seeded data and comparisons with the reference. */
import type { Backend, Buf } from "../../../kernels/backend.ts";
import { GGMLType, quantizeRow } from "../../../kernels/quant/mod.ts";

/** Deterministic floats in [-scale, scale) (mulberry32). */
export function rand(n: number, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = ((((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1) * scale;
  }
  return out;
}

/** Every weight type a model file may hold, with the row-length granularity it needs. */
export const WEIGHT_TYPES: { type: GGMLType; name: string; block: number }[] = [
  { type: GGMLType.F32, name: "F32", block: 1 },
  { type: GGMLType.F16, name: "F16", block: 1 },
  { type: GGMLType.BF16, name: "BF16", block: 1 },
  { type: GGMLType.Q4_0, name: "Q4_0", block: 32 },
  { type: GGMLType.Q4_1, name: "Q4_1", block: 32 },
  { type: GGMLType.Q5_0, name: "Q5_0", block: 32 },
  { type: GGMLType.Q5_1, name: "Q5_1", block: 32 },
  { type: GGMLType.Q8_0, name: "Q8_0", block: 32 },
  { type: GGMLType.Q2_K, name: "Q2_K", block: 256 },
  { type: GGMLType.Q3_K, name: "Q3_K", block: 256 },
  { type: GGMLType.Q4_K, name: "Q4_K", block: 256 },
  { type: GGMLType.Q5_K, name: "Q5_K", block: 256 },
  { type: GGMLType.Q6_K, name: "Q6_K", block: 256 },
];

/** Weight bytes of `type` for a [n × rows] matrix of seeded floats. */
export function weightBytes(type: GGMLType, n: number, rows: number, seed: number): Uint8Array {
  return quantizeRow(type, rand(n * rows, seed), n * rows);
}

/** A buffer of `be` holding `x`. */
export function bufOf(be: Backend, x: Float32Array): Buf {
  const b = be.buffer(x.length);
  be.write(b, x);
  return b;
}

/** Throw unless every element is within `rel`·max(1, |want|) of `want` (rel 0: bit-identical). */
export function assertClose(
  got: Float32Array,
  want: Float32Array,
  rel: number,
  what: string,
): void {
  if (got.length !== want.length) {
    throw new Error(`${what}: length ${got.length} ≠ ${want.length}`);
  }
  for (let i = 0; i < want.length; i++) {
    const g = got[i];
    const w = want[i];
    if (rel === 0) {
      if (!Object.is(g, w) && !(g === w)) {
        throw new Error(`${what}: element ${i} is ${g}, reference ${w} (must be bit-identical)`);
      }
    } else if (!(Math.abs(g - w) <= rel * Math.max(1, Math.abs(w)))) {
      throw new Error(`${what}: element ${i} is ${g}, reference ${w} (rel tol ${rel})`);
    }
  }
}
