/**
 * A minimal GGUF tensor reader for kernel tests, so they do not depend on `model/gguf` (written
 * in parallel). Reads only what the tests need: tensor names, types, shapes and bytes.
 */
import { rowBytes } from "../../../kernels/quant/types.ts";

export interface TestTensor {
  name: string;
  type: number;
  shape: number[];
  data: Uint8Array;
}

export const FIXTURES = new URL("../../../../shared/fixtures/models/", import.meta.url);

/** Every tensor of a GGUF v2/v3 file, by name. */
export function readTensors(file: string): Map<string, TestTensor> {
  const bytes = Deno.readFileSync(new URL(file, FIXTURES));
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let p = 0;
  const u32 = () => {
    const v = dv.getUint32(p, true);
    p += 4;
    return v;
  };
  const u64 = () => {
    const v = Number(dv.getBigUint64(p, true));
    p += 8;
    return v;
  };
  const str = () => {
    const n = u64();
    const s = new TextDecoder().decode(bytes.subarray(p, p + n));
    p += n;
    return s;
  };
  const SIZES: Record<number, number> = {
    0: 1,
    1: 1,
    2: 2,
    3: 2,
    4: 4,
    5: 4,
    6: 4,
    7: 1,
    10: 8,
    11: 8,
    12: 8,
  };
  let alignment = 32;
  const skip = (t: number): number | undefined => {
    if (t === 8) {
      str();
      return undefined;
    }
    if (t === 9) {
      const et = u32();
      const n = u64();
      for (let i = 0; i < n; i++) skip(et);
      return undefined;
    }
    const s = SIZES[t];
    if (s === undefined) throw new Error(`bad GGUF value type ${t}`);
    const v = s === 4 ? dv.getUint32(p, true) : undefined;
    p += s;
    return v;
  };
  if (u32() !== 0x46554747) throw new Error(`${file}: not GGUF`);
  u32();
  const nT = u64();
  const nKV = u64();
  for (let i = 0; i < nKV; i++) {
    const key = str();
    const v = skip(u32());
    if (key === "general.alignment" && v !== undefined) alignment = v;
  }
  const infos: { name: string; shape: number[]; type: number; offset: number }[] = [];
  for (let i = 0; i < nT; i++) {
    const name = str();
    const nd = u32();
    const shape: number[] = [];
    for (let j = 0; j < nd; j++) shape.push(u64());
    const type = u32();
    infos.push({ name, shape, type, offset: u64() });
  }
  const base = Math.ceil(p / alignment) * alignment;
  const out = new Map<string, TestTensor>();
  for (const t of infos) {
    const nbytes = rowBytes(t.type, t.shape[0]) * t.shape.slice(1).reduce((a, b) => a * b, 1);
    const start = base + t.offset;
    out.set(t.name, { ...t, data: bytes.slice(start, start + nbytes) });
  }
  return out;
}

/** The f32 values of an F32 tensor. */
export function f32Values(t: TestTensor): Float32Array {
  return new Float32Array(t.data.buffer, t.data.byteOffset, t.data.byteLength / 4);
}

/** Deterministic PRNG (mulberry32) returning floats in [0, 1). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `n` floats, roughly normal(0, scale), from a seeded PRNG. */
export function randomFloats(n: number, seed: number, scale = 1): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = r() || 1e-9;
    out[i] = scale * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * r());
  }
  return out;
}
